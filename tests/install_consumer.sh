#!/usr/bin/env bash
# Installs the built lmforge into a scratch prefix, then configures, builds and runs the separate
# examples/consumer project against it with find_package(lmforge), and runs both of its programs:
# the consumer, and examples/custom_model.cpp (a decoder of its own trained by the public trainer,
# stopped and resumed bit-exactly, then sampled), whose output is checked here.
set -euo pipefail
source_dir=$1 binary_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$binary_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$source_dir/examples/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
out=$("$work/build/custom_model" "$work/custom" 60)
echo "$out"
grep -q "resume is bit-exact: yes" <<<"$out"
grep -q "resumed run finished at step 60 (max_steps)" <<<"$out"
grep -Eq "^sample:( [0-9]+){24}$" <<<"$out"
# The validation loss falls from about ln(64) = 4.16 to well under half of it.
last=$(grep -Eo "val loss [0-9.]+" <<<"$out" | tail -n 1 | awk '{print $3}')
awk -v v="$last" 'BEGIN { exit !(v < 2.0) }' || { echo "final validation loss $last is not below 2.0" >&2; exit 1; }
