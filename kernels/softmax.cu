// Softmax over the last dim, y (N, C) = exp(x - max) / sum, one block of 256 threads per row (rows
// can be long: attention-score-sized or vocabulary-sized), with block reductions for max and sum.
// Gradient: dx = y * (dy - sum_c(dy * y)), again one block per row.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void softmax_forward_kernel(float* y, const float* x, int64_t c) {
  __shared__ float scratch[32];
  const float* xr = x + blockIdx.x * c;
  float* yr = y + blockIdx.x * c;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, xr[j]);
  m = block_max(m, scratch);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) s += expf(xr[j] - m);
  const float inv = 1.0f / block_sum(s, scratch);
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) yr[j] = expf(xr[j] - m) * inv;
}

__global__ void softmax_backward_kernel(float* dx, const float* dy, const float* y, int64_t c) {
  __shared__ float scratch[32];
  const int64_t off = blockIdx.x * c;
  float dot = 0.f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dot += dy[off + j] * y[off + j];
  dot = block_sum(dot, scratch);
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dx[off + j] = y[off + j] * (dy[off + j] - dot);
}

}  // namespace

void softmax_forward(float* y, const float* x, int64_t n, int64_t c, cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  check_grid("softmax_forward", "rows", n, kMaxGridX);
  softmax_forward_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(y, x, c);
  LMF_CUDA_LAUNCH_CHECK();
}

void softmax_backward(float* dx, const float* dy, const float* y, int64_t n, int64_t c, cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  check_grid("softmax_backward", "rows", n, kMaxGridX);
  softmax_backward_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(dx, dy, y, c);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
