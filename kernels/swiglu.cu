// The SwiGLU gate, elementwise on (N) = (B, T, I): out = silu(gate) * up, silu(g) = g sigmoid(g).
// Gradient (s = sigmoid(g)): dgate = dout * up * s * (1 + g (1 - s)), dup = dout * g * s (written).
// expf, not __expf, keeps the result within a few ulp of the CPU reference.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoidf(float g) { return 1.0f / (1.0f + expf(-g)); }

__global__ void swiglu_forward_kernel(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g * sigmoidf(g) * up[i];
  }
}

__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                                       int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i], s = sigmoidf(g), d = dout[i];
    if (dgate) dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
    if (dup) dup[i] = d * g * s;
  }
}

}  // namespace

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, gate, up, n);
  LMF_CUDA_LAUNCH_CHECK();
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n,
                     cudaStream_t stream) {
  if (n == 0) return;
  swiglu_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dgate, dup, dout, gate, up, n);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
