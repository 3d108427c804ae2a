#!/bin/sh
# Installs node-llama-cpp (llama.cpp itself, prebuilt for this platform, with node bindings) into
# DIR (default: ./llama-cpp-npm) for the opt-in test that loads exported GGUF files in llama.cpp.
# About 730 MB. Prints nothing on success; exits non-zero with the reason when npm fails.
set -eu
dir="${1:-llama-cpp-npm}"
version=3.21.1  # newer releases' lock files may name builds the registry does not serve here
command -v npm >/dev/null 2>&1 || { echo "npm is not installed" >&2; exit 2; }
command -v node >/dev/null 2>&1 || { echo "node is not installed" >&2; exit 2; }
mkdir -p "$dir"
if [ -z "${LMF_FETCH_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
  LMF_FETCH_LOCKED=1 exec flock "$dir/.lock" sh "$0" "$dir"
fi
[ -f "$dir/node_modules/node-llama-cpp/package.json" ] && exit 0
cd "$dir"
[ -f package.json ] || echo '{"name": "lmforge-llama-cpp-check", "private": true}' > package.json
npm install -E --no-audit --no-fund --loglevel=error "node-llama-cpp@$version" >npm.log 2>&1 ||
  { echo "npm install failed (see $dir/npm.log)" >&2; tail -n 5 npm.log >&2; exit 3; }
