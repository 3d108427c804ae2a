#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address) in build-fuzz/ and runs each on
# its committed corpus (fuzz/corpus/<target>/) for a bounded time: FUZZ_SECONDS per target
# (default 12, about a minute for all five). Without clang or its fuzzer runtime it prints why and
# exits 0, so it never breaks a build that cannot fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-12}"
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
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DLMF_CUDA=OFF -DLMF_FUZZ=ON -DLMF_BUILD_TESTS=OFF \
  -DLMF_BUILD_BENCH=OFF -DLMF_NATIVE=OFF "${launcher[@]}" >/dev/null
targets=(safetensors_header config_json tokenizer_json shard_header yaml_config)
cmake --build "$build" -j"${FUZZ_JOBS:-2}" --target "${targets[@]/#/fuzz_}"
status=0
for t in "${targets[@]}"; do
  work="$build/fuzz-work/$t"
  mkdir -p "$work"
  echo "fuzz: $t for ${seconds}s"
  # New inputs go to a scratch corpus; the committed seeds are only read.
  if ! ASAN_OPTIONS=detect_leaks=0 "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -max_len=65536 \
      -rss_limit_mb=2048 -artifact_prefix="$work/" "$work" "fuzz/corpus/$t" >"$work/log.txt" 2>&1; then
    echo "fuzz: $t FAILED; see $work/log.txt"; tail -30 "$work/log.txt"; status=1
  fi
done
exit $status
