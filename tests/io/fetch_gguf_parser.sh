#!/bin/sh
# Installs @huggingface/gguf (Hugging Face's GGUF parser, the independent reader of the GGUF export
# tests) into DIR (default: ./gguf-npm). Prints nothing on success; exits non-zero with the reason
# when npm or the registry is missing.
set -eu
dir="${1:-gguf-npm}"
version=0.4.6
command -v npm >/dev/null 2>&1 || { echo "npm is not installed" >&2; exit 2; }
command -v node >/dev/null 2>&1 || { echo "node is not installed" >&2; exit 2; }
mkdir -p "$dir"
# Test executables may run in parallel (ctest -j): let one install while the others wait.
if [ -z "${LMF_FETCH_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
  LMF_FETCH_LOCKED=1 exec flock "$dir/.lock" sh "$0" "$dir"
fi
[ -f "$dir/node_modules/@huggingface/gguf/package.json" ] && exit 0
cd "$dir"
[ -f package.json ] || echo '{"name": "lmforge-gguf-test-parser", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error "@huggingface/gguf@$version" >npm.log 2>&1 ||
  { echo "npm install failed (see $dir/npm.log)" >&2; tail -n 5 npm.log >&2; exit 3; }
