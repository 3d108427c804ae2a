#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address; only the parser sources, see
# fuzz/CMakeLists.txt) in build-fuzz/ and runs each on its committed corpus (fuzz/corpus/<target>/)
# for a bounded time: FUZZ_SECONDS per target (default 8, about a minute for all eight). Without
# clang or its fuzzer runtime it prints why and exits 0, so it never breaks a build that cannot fuzz.
# A crash, leak, timeout (a single input over 10 s) or memory blow-up fails the script; the input
# that did it is left in build-fuzz/fuzz-work/<target>/ (crash-*, leak-*, timeout-*, oom-*).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-8}"
if [ "$seconds" = 0 ]; then
  echo "fuzz: skipped (FUZZ_SECONDS=0)"; exit 0
fi
build="${FUZZ_BUILD_DIR:-build-fuzz}"
if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: skipped (clang++ is not installed)"; exit 0
fi
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' > "$probe/p.cpp"
if ! clang++ -fsanitize=fuzzer,address "$probe/p.cpp" -o "$probe/p" >/dev/null 2>&1; then
  echo "fuzz: skipped (clang's libFuzzer runtime is missing: clang++ -fsanitize=fuzzer does not link)"; exit 0
fi
# Everything outside the parsers comes from a regular build's library (see fuzz/CMakeLists.txt).
lib_dir="$(realpath -m "${LMF_LIBRARY_BUILD_DIR:-build}")"
if [ ! -f "$lib_dir/liblmforge.so" ]; then
  echo "fuzz: building liblmforge.so in $lib_dir first"
  cmake -S . -B "$lib_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$lib_dir" -j"${FUZZ_JOBS:-2}" --target lmforge
fi
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DLMF_CUDA=OFF -DLMF_FUZZ=ON -DLMF_BUILD_TESTS=OFF \
  -DLMF_BUILD_BENCH=OFF -DLMF_NATIVE=OFF -DLMF_FUZZ_LIBRARY="$lib_dir/liblmforge.so" "${launcher[@]}" >/dev/null
targets=(safetensors_header config_json tokenizer_json hf_tokenizer_json chat_template shard_header
         yaml_config jsonl)
cmake --build "$build" -j"${FUZZ_JOBS:-2}" --target "${targets[@]/#/fuzz_}"
status=0
for t in "${targets[@]}"; do
  work="$build/fuzz-work/$t"
  mkdir -p "$work"
  echo "fuzz: $t for ${seconds}s"
  # New inputs go to a scratch corpus; the committed seeds are only read.
  if ! "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=1024 -artifact_prefix="$work/" "$work" "fuzz/corpus/$t" \
      >"$work/log.txt" 2>&1; then
    echo "fuzz: $t FAILED; see $work/log.txt"; tail -30 "$work/log.txt"; status=1
  fi
done
exit $status
