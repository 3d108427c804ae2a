// GELU with GPT-2's tanh approximation, elementwise on (N) = (B, T, 4C) activations.
//   gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
// Gradient: dx = dout * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).
// tanhf (not the fast approximate tanh) keeps the result within a few ulp of the CPU reference.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

__global__ void gelu_forward_kernel(float* out, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float xi = x[i];
    const float u = kSqrt2OverPi * (xi + kCubic * xi * xi * xi);
    out[i] = 0.5f * xi * (1.0f + tanhf(u));
  }
}

__global__ void gelu_backward_kernel(float* dx, const float* dout, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float xi = x[i];
    const float u = kSqrt2OverPi * (xi + kCubic * xi * xi * xi);
    const float th = tanhf(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * xi * xi);
    dx[i] = dout[i] * (0.5f * (1.0f + th) + 0.5f * xi * (1.0f - th * th) * du);
  }
}

}  // namespace

void gelu_forward(float* out, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, x, n);
  LMF_CUDA_LAUNCH_CHECK();
}

void gelu_backward(float* dx, const float* dout, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dx, dout, x, n);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
