#!/usr/bin/env bash
# Sets everything up and runs the test suite: installs missing Debian packages, configures,
# builds with all cores, runs ctest, then the fuzz targets for about a minute in all
# (scripts/fuzz.sh; FUZZ_SECONDS per target, 0 skips them). Extra arguments go to ctest (e.g.
# -L cpu, -R gpt). BUILD_DIR (default build) and LMF_CMAKE_ARGS (extra cmake flags) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${LMF_CMAKE_ARGS:-}
cmake --build "$build_dir" -j"$(nproc)"
ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)" "$@"
LMF_LIBRARY_BUILD_DIR="$build_dir" scripts/fuzz.sh
