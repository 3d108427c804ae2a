// The SwiGLU gate, elementwise on (N) = (B, T, I): out = silu(gate) * up, silu(g) = g sigmoid(g).
// Gradient (s = sigmoid(g)): dgate = dout * up * s * (1 + g (1 - s)), dup = dout * g * s (written).
// expf, not __expf, keeps the result within a few ulp of the CPU reference. gate, up and out are
// f32 or bf16 storage (templates, f32 math in registers): bf16 activations are read and written in
// place, the output rounded once.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoidf(float g) { return 1.0f / (1.0f + expf(-g)); }

template <class TG, class TU, class TO>
__global__ void swiglu_forward_kernel(TO* out, const TG* gate, const TU* up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_float(gate[i]);
    out[i] = from_float<TO>(g * sigmoidf(g) * to_float(up[i]));
  }
}

template <class TG, class TU>
__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dout, const TG* gate, const TU* up,
                                       int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_float(gate[i]), s = sigmoidf(g), d = dout[i];
    if (dgate) dgate[i] = d * to_float(up[i]) * s * (1.0f + g * (1.0f - s));
    if (dup) dup[i] = d * g * s;
  }
}

}  // namespace

void swiglu_forward_typed(void* out, ElemType out_type, const void* gate, ElemType gate_type, const void* up,
                          ElemType up_type, int64_t n, cudaStream_t stream) {
  const bool g16 = storage_is_bf16(gate_type, "swiglu_forward", "gate");
  const bool u16 = storage_is_bf16(up_type, "swiglu_forward", "up");
  const bool o16 = storage_is_bf16(out_type, "swiglu_forward", "out");
  if (n == 0) return;
  with_storage(g16, u16, o16, [&](auto tg, auto tu, auto to) {
    using TG = decltype(tg);
    using TU = decltype(tu);
    using TO = decltype(to);
    swiglu_forward_kernel<TG, TU, TO><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<TO*>(out), static_cast<const TG*>(gate), static_cast<const TU*>(up), n);
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void swiglu_backward_typed(float* dgate, float* dup, const float* dout, const void* gate, ElemType gate_type,
                           const void* up, ElemType up_type, int64_t n, cudaStream_t stream) {
  const bool g16 = storage_is_bf16(gate_type, "swiglu_backward", "gate");
  const bool u16 = storage_is_bf16(up_type, "swiglu_backward", "up");
  if (n == 0) return;
  with_storage(g16, u16, [&](auto tg, auto tu) {
    using TG = decltype(tg);
    using TU = decltype(tu);
    swiglu_backward_kernel<TG, TU><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        dgate, dup, dout, static_cast<const TG*>(gate), static_cast<const TU*>(up), n);
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n, cudaStream_t stream) {
  swiglu_forward_typed(out, ElemType::f32, gate, ElemType::f32, up, ElemType::f32, n, stream);
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n,
                     cudaStream_t stream) {
  swiglu_backward_typed(dgate, dup, dout, gate, ElemType::f32, up, ElemType::f32, n, stream);
}

}  // namespace lmf::kernels
