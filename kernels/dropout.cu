// Inverted dropout with the counter-based Philox4x32-10 generator of src/core/rng.cpp, written
// again here so kernels stay free of lmforge code. Element i is kept when
// philox_uniform(seed, base + i) >= p, bit-identical to the CPU (same rounds, same 24-bit
// mantissa mapping), so a model trained on either device sees the same masks.
// Shapes: x, out (N). Gradient: dx = dout * keep / (1 - p), the same call with x = dout.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

/// First word of Philox4x32-10 for a 64-bit key and a 64-bit counter (the words 2, 3 of the
/// counter are 0), exactly as lmf::philox on the host.
__device__ __forceinline__ uint32_t philox_word0(uint64_t key, uint64_t counter) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(kMul0, c0), lo0 = kMul0 * c0;
    const uint32_t hi1 = __umulhi(kMul1, c2), lo1 = kMul1 * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n1 = lo1;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    const uint32_t n3 = lo0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return c0;
}

__device__ __forceinline__ float philox_uniform(uint64_t key, uint64_t index) {
  return static_cast<float>(philox_word0(key, index) >> 8) * (1.0f / 16777216.0f);
}

// x and out are f32 or bf16 storage (f32 math); a bf16 x is scaled in registers and rounded once.
template <class TIn, class TOut>
__global__ void dropout_kernel(TOut* out, const TIn* x, int64_t n, float p, float keep_scale, uint64_t seed,
                               uint64_t base) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const bool keep = philox_uniform(seed, base + static_cast<uint64_t>(i)) >= p;
    out[i] = from_float<TOut>(keep ? to_float(x[i]) * keep_scale : 0.f);
  }
}

}  // namespace

void dropout_apply_typed(void* out, ElemType out_type, const void* x, ElemType x_type, int64_t n, float p,
                         uint64_t seed, uint64_t base, cudaStream_t stream) {
  const bool x16 = storage_is_bf16(x_type, "dropout_apply", "x");
  const bool out16 = storage_is_bf16(out_type, "dropout_apply", "out");
  if (n == 0) return;
  const float keep_scale = p < 1.f ? 1.0f / (1.0f - p) : 0.f;
  with_storage(x16, out16, [&](auto tin, auto tout) {
    using TIn = decltype(tin);
    using TOut = decltype(tout);
    dropout_kernel<TIn, TOut><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<TOut*>(out), static_cast<const TIn*>(x), n, p, keep_scale, seed, base);
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void dropout_apply(float* out, const float* x, int64_t n, float p, uint64_t seed, uint64_t base,
                   cudaStream_t stream) {
  dropout_apply_typed(out, ElemType::f32, x, ElemType::f32, n, p, seed, base, stream);
}

}  // namespace lmf::kernels
