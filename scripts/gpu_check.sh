#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build lmforge with CUDA, run the CUDA tests (ctest -L cuda) and
# every GPU benchmark, then print one summary. Usage: scripts/gpu_check.sh [build-dir]
# Environment: LMF_CUDA_ARCHITECTURES (default: the GPU's own, e.g. 90a on H100), JOBS.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-gpu}"
jobs="${JOBS:-$(nproc)}"
log="$build/gpu_check"
mkdir -p "$log"

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi -L failed)"; exit 1
fi
gpu="$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -1)"
cap="$(echo "$gpu" | awk -F', ' '{print $2}' | tr -d .)"
arch="${LMF_CUDA_ARCHITECTURES:-$([ "$cap" = 90 ] && echo 90a || echo "$cap")}"

status() { [ "$1" -eq 0 ] && echo ok || echo "FAILED ($1)"; }

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLMF_CUDA=ON -DLMF_BUILD_BENCH=ON \
  -DLMF_CUDA_ARCHITECTURES="$arch" >"$log/configure.log" 2>&1
configure=$?
cmake --build "$build" -j"$jobs" >"$log/build.log" 2>&1
build_rc=$?
(cd "$build" && ctest -L cuda --output-on-failure) >"$log/ctest.log" 2>&1
ctest_rc=$?
"$build/bin/bench_matmul" >"$log/bench_matmul.log" 2>&1
matmul_rc=$?
"$build/bin/bench_attention" >"$log/bench_attention.log" 2>&1
attention_rc=$?
torch_attention_rc=skipped
torch_train_rc=skipped
if python3 -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
  python3 "$root/bench/attention_torch.py" >"$log/attention_torch.log" 2>&1; torch_attention_rc=$(status $?)
  python3 "$root/bench/train_gpt2_torch.py" >"$log/train_gpt2_torch.log" 2>&1; torch_train_rc=$(status $?)
fi

echo "=== lmforge GPU check: $gpu, arch $arch ==="
printf "%-28s %s\n" "configure" "$(status $configure)" "build" "$(status $build_rc)" \
  "ctest -L cuda" "$(status $ctest_rc)" "bench_matmul" "$(status $matmul_rc)" \
  "bench_attention" "$(status $attention_rc)" "attention_torch.py" "$torch_attention_rc" \
  "train_gpt2_torch.py" "$torch_train_rc"
echo; echo "--- tests"; grep -E "tests passed|tests failed|Failed|Passed" "$log/ctest.log" | tail -n 20
echo; echo "--- matmul (ours vs cuBLASLt)"; cat "$log/bench_matmul.log"
echo; echo "--- attention (ours)"; cat "$log/bench_attention.log"
[ -f "$log/attention_torch.log" ] && { echo; echo "--- attention (PyTorch SDPA)"; cat "$log/attention_torch.log"; }
[ -f "$log/train_gpt2_torch.log" ] && { echo; echo "--- PyTorch GPT-2 124M training"; tail -n 1 "$log/train_gpt2_torch.log"; }
echo; echo "logs: $log"
[ $configure -eq 0 ] && [ $build_rc -eq 0 ] && [ $ctest_rc -eq 0 ]
