#!/usr/bin/env bash
# The GPU check as a prepared bundle: built here (no GPU needed), carried to a GPU machine, run there
# as one command that fits a short lease. Two entries:
#   scripts/gpu_check.sh build [BUNDLE]  here: CUDA build for sm_90a (no -march=native, no MPI/NCCL)
#                                        in build-gpu/, then BUNDLE (default build-gpu-bundle/): the
#                                        CUDA tests, benchmarks, CLI, liblmforge and the Debian
#                                        libraries they need (rpath $ORIGIN/../lib), python scripts,
#                                        and this script as BUNDLE/run.sh. Refuses a bundle >= 64 MiB.
#   BUNDLE/run.sh  (= gpu_check.sh run)  on the GPU machine: every CUDA test under its own timeout
#                                        with LMF_REQUIRE_GPU=1 (a skip fails), the kernel benchmarks,
#                                        the PyTorch comparisons and a short GPT-2 124M training run;
#                                        logs and summary.txt into $OUT (6 files), within ~7 minutes.
#                                        Without a usable GPU it refuses with the reason and exit 2.
# Environment (build): LMF_CUDA_ARCHITECTURES (default 90a), JOBS (default 2), BUILD_DIR.
# Environment (run): OUT (default BUNDLE/out), LMF_CHECK_BUDGET_S (default 400: later steps are
# marked "not run" once the budget is spent, so the call always returns its logs).
set -uo pipefail

# ------------------------------------------------------------------------------------------------
build_bundle() {
  local root bundle build arch jobs
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  bundle="$(realpath -m "${1:-$root/build-gpu-bundle}")"
  build="${BUILD_DIR:-$root/build-gpu}"
  arch="${LMF_CUDA_ARCHITECTURES:-90a}"
  jobs="${JOBS:-2}"
  command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "gpu_check build: nvcc not found"; return 1; }
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$root")}"
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  # NCCL and MPI off: one GPU, and their libraries are not on the GPU image (and too large to carry).
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLMF_CUDA=ON -DLMF_MPI=OFF \
    -DLMF_NATIVE=OFF -DLMF_CUDA_ARCHITECTURES="$arch" -DLMF_NCCL=OFF \
    -DLMF_BUILD_TESTS=ON -DLMF_BUILD_BENCH=ON "${launcher[@]}" || return 1
  local tests benches=(bench_matmul bench_attention bench_flash_attention bench_gpt2_cuda)
  mapfile -t tests < <(ninja -C "$build" -t targets all | sed -n 's/^\(cuda_test_[a-z0-9_]*\): .*/\1/p' | sort -u)
  [ "${#tests[@]}" -gt 0 ] || { echo "gpu_check build: no cuda_test_* targets"; return 1; }
  ninja -C "$build" -j"$jobs" lmforge lmforge_cli "${tests[@]}" "${benches[@]}" || return 1

  rm -rf "$bundle" && mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/py"
  local t
  for t in "${tests[@]}"; do cp "$build/tests/$t" "$bundle/bin/"; done
  for t in "${benches[@]}"; do cp "$build/bin/$t" "$bundle/bin/"; done
  cp "$build/bin/lmforge" "$bundle/bin/"
  cp -P "$build"/liblmforge.so* "$bundle/lib/"
  cp "$root/bench/attention_torch.py" "$root/bench/train_gpt2_torch.py" "$bundle/py/"
  cp "$root/scripts/gpu_check.sh" "$bundle/run.sh"
  printf 'built %s on %s from %s (%s), sm_%s\n' "$(date -u +%FT%TZ)" "$(uname -n)" "$root" \
    "$(git -C "$root" rev-parse --short HEAD 2>/dev/null)$(git -C "$root" diff --quiet 2>/dev/null || echo +dirty)" "$arch" \
    >"$bundle/BUILD_INFO"

  # The Debian libraries the binaries load (yaml-cpp, fmt, libgomp, ... and their own needs), next to
  # liblmforge; not glibc (the GPU image's is newer) and not the CUDA libraries (the image has them;
  # cuBLASLt alone is over 500 MB). libcudart is small and pinned to the version built against.
  local lib
  while read -r lib; do
    case "$(basename "$lib")" in
      # glibc, libstdc++ and libgcc_s stay the image's (newer, backward compatible; an older copy
      # first on LD_LIBRARY_PATH would break newer programs).
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
      libcuda.so*|libcublas*|libnccl*|liblmforge*) ;;
      *) cp -L "$lib" "$bundle/lib/" ;;
    esac
  done < <(for f in "$bundle"/bin/* "$bundle"/lib/liblmforge.so.*.*; do
             LD_LIBRARY_PATH="$bundle/lib" ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
           done | sort -u)
  command -v patchelf >/dev/null && for f in "$bundle"/bin/*; do patchelf --set-rpath '$ORIGIN/../lib' "$f"; done
  strip --strip-unneeded "$bundle"/bin/* "$bundle"/lib/*.so* 2>/dev/null
  local bytes
  bytes=$(du -sb "$bundle" | cut -f1)
  echo "gpu_check build: bundle $bundle: $(ls "$bundle/bin" | wc -l) programs, $(ls "$bundle/lib" | wc -l) libraries, $((bytes / 1024 / 1024)) MiB"
  if [ "$bytes" -ge $((64 * 1024 * 1024)) ]; then
    echo "gpu_check build: the bundle is over the 64 MiB a device call can carry"; return 1
  fi
  echo "gpu_check build: on the GPU machine: run(command=\"bash ${bundle#$root/}/run.sh\", carry=[\"${bundle#$root/}\"], timeout_s=540)"
}

# ------------------------------------------------------------------------------------------------
run_bundle() {
  local bundle out start budget
  bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  [ -d "$bundle/bin" ] || { echo "gpu_check run: $bundle is not a bundle (no bin/); build one with scripts/gpu_check.sh build"; return 2; }
  out="${OUT:-$bundle/out}"
  mkdir -p "$out"
  start=$(date +%s)
  budget="${LMF_CHECK_BUDGET_S:-400}"
  local summary="$out/summary.txt" env_log="$out/env.log" tests_log="$out/tests.log"
  local kernels_log="$out/bench_kernels.log" torch_log="$out/torch.log" train_log="$out/train.log"
  : >"$summary"; : >"$env_log"; : >"$tests_log"; : >"$kernels_log"; : >"$torch_log"; : >"$train_log"
  say() { echo "$*" | tee -a "$summary"; }
  say "=== lmforge GPU check $(date -u +%FT%TZ) ==="
  say "bundle: $(cat "$bundle/BUILD_INFO" 2>/dev/null)"

  # A GPU must be there and usable; its absence or a driver error is the answer, not a skip.
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    say "REFUSED: no NVIDIA GPU here (nvidia-smi not found). Run this on the GPU machine: docs/gpu.md"; return 2
  fi
  local smi
  if ! smi="$(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>&1)"; then
    say "REFUSED: nvidia-smi failed: $smi"; return 2
  fi
  say "gpu: $smi"
  { nvidia-smi; echo; uname -a; cat /etc/os-release 2>/dev/null | head -2; } >>"$env_log" 2>&1

  # CUDA libraries of the image: the toolkit's and those of the Python wheels (nvidia-*).
  local dirs="$bundle/lib" d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(ls -d /usr/local/cuda-*/lib64 2>/dev/null); do
    [ -d "$d" ] && dirs="$dirs:$d"
  done
  local py_nv
  py_nv="$(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, s, "lib") for p in nvidia.__path__ for s in sorted(os.listdir(p))))' 2>/dev/null)"
  for d in $py_nv; do [ -d "$d" ] && dirs="$dirs:$d"; done
  local python_ld="${LD_LIBRARY_PATH:-}"  # PyTorch runs with the image's own library path
  export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LMF_REQUIRE_GPU=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" PYTHONUNBUFFERED=1
  local missing
  missing="$(for f in "$bundle"/bin/*; do ldd "$f" 2>&1 | grep 'not found' | sed "s|^|$(basename "$f"): |"; done)"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$env_log"
  if [ -n "$missing" ]; then
    say "REFUSED: libraries not found on this machine:"; say "$missing"; return 2
  fi

  local failures=0 results=()
  # step NAME TIMEOUT LOG cmd...: runs under its own timeout unless the budget is spent.
  step() {
    local name="$1" limit="$2" log="$3"; shift 3
    local now=$(( $(date +%s) - start ))
    if [ "$now" -ge "$budget" ]; then
      results+=("$(printf '%-34s %s' "$name" "NOT RUN (budget of ${budget}s spent)")"); failures=$((failures + 1)); return
    fi
    local left=$(( budget - now )); [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name ($(date -u +%T), timeout ${limit}s): $*" >>"$log"
    local t0=$(date +%s) rc
    timeout -k 5 "$limit" "$@" >>"$log" 2>&1; rc=$?
    local dt=$(( $(date +%s) - t0 )) verdict=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict="TIMEOUT after ${limit}s"
    elif [ $rc -ne 0 ]; then verdict="FAILED (exit $rc)"
    fi
    # A skipped test on a GPU machine is a failure: it means the GPU was not usable.
    if [ "$verdict" = ok ] && tail -n 200 "$log" | sed -n "/^=== $name /,\$p" | grep -qi 'skipped'; then verdict="FAILED (skipped)"; fi
    [ "$verdict" = ok ] || failures=$((failures + 1))
    results+=("$(printf '%-34s %-24s %4ss' "$name" "$verdict" "$dt")")
    echo "=== $name: $verdict in ${dt}s" >>"$log"
  }

  local t
  for t in "$bundle"/bin/cuda_test_*; do
    step "$(basename "$t")" 90 "$tests_log" "$t" --durations yes
  done
  step bench_matmul 60 "$kernels_log" "$bundle/bin/bench_matmul" 20
  step bench_flash_attention 60 "$kernels_log" "$bundle/bin/bench_flash_attention" 20
  step bench_attention 40 "$kernels_log" "$bundle/bin/bench_attention" 5
  step attention_torch.py 60 "$torch_log" env LD_LIBRARY_PATH="$python_ld" python3 "$bundle/py/attention_torch.py" 20
  step bench_gpt2_cuda 90 "$train_log" "$bundle/bin/bench_gpt2_cuda" --batch 8 --seq 1024 --steps 10
  # The same training run with every product on the Hopper GEMM (falls back to mma.sync off sm_90).
  step bench_gpt2_cuda_wgmma 90 "$train_log" env LMF_MATMUL=wgmma "$bundle/bin/bench_gpt2_cuda" --batch 8 --seq 1024 --steps 10
  step train_gpt2_torch.py 120 "$torch_log" env LD_LIBRARY_PATH="$python_ld" python3 "$bundle/py/train_gpt2_torch.py" --batch 8 --seq 1024 --steps 10

  say ""
  say "--- results ($(( $(date +%s) - start ))s in all)"
  for t in "${results[@]}"; do say "$t"; done
  say ""
  say "--- test totals"; grep -hE "^(All tests passed|test cases:)" "$tests_log" | sort | uniq -c | tee -a "$summary"
  say ""; say "--- matmul / GEMM / attention (ours vs cuBLASLt / SDPA)"
  grep -hE "^(device|wgmma|shape|qkv|attn|fc|lm|square|all shapes|T |[0-9]+ )" "$kernels_log" "$torch_log" | tee -a "$summary" >/dev/null
  say ""; say "--- GPT-2 124M training"; grep -hiE "tokens/s" "$train_log" "$torch_log" | tail -n 6 | tee -a "$summary" >/dev/null
  say ""
  say "logs: $(ls "$out" | tr '\n' ' ')"
  if [ "$failures" -eq 0 ]; then say "GPU CHECK PASSED"; return 0; fi
  say "GPU CHECK FAILED: $failures step(s)"; return 1
}

case "${1:-}" in
  build) shift; build_bundle "$@" ;;
  run) shift; run_bundle "$@" ;;
  *)
    # Inside a bundle the script is run.sh: running it means "run".
    if [ "$(basename "$0")" = run.sh ]; then run_bundle "$@"
    else echo "usage: scripts/gpu_check.sh build [BUNDLE] | BUNDLE/run.sh (see docs/gpu.md)"; exit 64; fi ;;
esac
