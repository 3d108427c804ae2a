// Reductions: the sum of every element (also of squares, for the global gradient norm), the sum over
// one dim of (OUTER, D, INNER), and the broadcasts that are their backward passes.
// Full sums run in two fixed passes (kReducePartials block partials, then one block over them), so
// the result is the same bit for bit on every run and stays on the device: no host sync.
// Gradient: dx = factor * dout broadcast over the reduced elements.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void sum_partials_kernel(float* partials, const float* x, int64_t n, bool square) {
  __shared__ float scratch[32];
  float acc = 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    acc += square ? v * v : v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void sum_final_kernel(float* out, const float* partials, int count, float factor) {
  __shared__ float scratch[32];
  float acc = 0.f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) out[0] = acc * factor;
}

// One thread per (outer, inner) output; consecutive threads take consecutive inner indices so the
// reads of each step over D are coalesced.
__global__ void sum_dim_kernel(float* out, const float* x, int64_t outer, int64_t d, int64_t inner,
                               float factor) {
  const int64_t total = outer * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = i / inner, in = i % inner;
    const float* p = x + o * d * inner + in;
    float acc = 0.f;
    for (int64_t j = 0; j < d; ++j) acc += p[j * inner];
    out[i] = acc * factor;
  }
}

__global__ void sum_dim_backward_kernel(float* dx, const float* dout, int64_t outer, int64_t d,
                                        int64_t inner, float factor) {
  const int64_t total = outer * d * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t in = i % inner, o = i / (d * inner);
    dx[i] = dout[o * inner + in] * factor;
  }
}

__global__ void broadcast_scalar_kernel(float* out, const float* scalar, float factor, int64_t n) {
  const float v = scalar[0] * factor;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = v;
}

}  // namespace

void sum_all(float* out, const float* x, int64_t n, float factor, bool square, float* workspace,
             cudaStream_t stream) {
  // A grid of exactly kReducePartials blocks (fewer for small n) fixes the summation order.
  const int blocks = static_cast<int>(
      n == 0 ? 1 : (n + kThreads - 1) / kThreads < kReducePartials ? (n + kThreads - 1) / kThreads
                                                                   : kReducePartials);
  sum_partials_kernel<<<blocks, kThreads, 0, stream>>>(workspace, x, n, square);
  LMF_CUDA_LAUNCH_CHECK();
  sum_final_kernel<<<1, kThreads, 0, stream>>>(out, workspace, blocks, factor);
  LMF_CUDA_LAUNCH_CHECK();
}

void sum_dim_forward(float* out, const float* x, int64_t outer, int64_t d, int64_t inner, float factor,
                     cudaStream_t stream) {
  const int64_t total = outer * inner;
  if (total == 0) return;
  sum_dim_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(out, x, outer, d, inner, factor);
  LMF_CUDA_LAUNCH_CHECK();
}

void sum_dim_backward(float* dx, const float* dout, int64_t outer, int64_t d, int64_t inner,
                      float factor, cudaStream_t stream) {
  const int64_t total = outer * d * inner;
  if (total == 0) return;
  sum_dim_backward_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(dx, dout, outer, d, inner,
                                                                              factor);
  LMF_CUDA_LAUNCH_CHECK();
}

void broadcast_scalar(float* out, const float* scalar, float factor, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  broadcast_scalar_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, scalar, factor, n);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
