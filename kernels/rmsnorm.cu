// RMS normalisation over the last dim (Hugging Face's LlamaRMSNorm): x (N, C) -> out (N, C) =
// x * rstd * w, rstd (N) = rsqrt(mean(x²) + eps) saved. One warp per row, as layernorm.cu.
// Gradient (xhat = x * rstd, dnorm = dout * w):
//   dx = rstd * (dnorm - xhat * mean_c(dnorm * xhat))   (written)
//   dw = sum_n dout * xhat                              (written)
// dw: each block sums a chunk of kChunkRows rows for 32 columns into workspace (chunks, C), then
// one fixed pass adds the chunks: deterministic, no atomics.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kChunkRows = 256;

__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* x, const float* weight, int64_t n,
                                       int64_t c, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= n) return;
  const float* xr = x + row * c;  // (C)
  float s = 0.f;
  for (int64_t j = lane; j < c; j += 32) s += xr[j] * xr[j];
  const float r = rsqrtf(warp_sum(s) / static_cast<float>(c) + eps);
  float* orow = out + row * c;
  for (int64_t j = lane; j < c; j += 32) orow[j] = weight[j] * (xr[j] * r);
  if (lane == 0) rstd[row] = r;
}

__global__ void rmsnorm_backward_dx_kernel(float* dx, const float* dout, const float* x, const float* weight,
                                           const float* rstd, int64_t n, int64_t c) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= n) return;
  const float* g = dout + row * c;
  const float* xr = x + row * c;
  const float r = rstd[row];
  float s = 0.f;
  for (int64_t j = lane; j < c; j += 32) s += g[j] * weight[j] * (xr[j] * r);
  const float mean_dnorm_xhat = warp_sum(s) / static_cast<float>(c);
  float* d = dx + row * c;
  for (int64_t j = lane; j < c; j += 32) d[j] = r * (g[j] * weight[j] - xr[j] * r * mean_dnorm_xhat);
}

// Block (32, 8), grid (ceil(C / 32), chunks): partial (chunk, c) = sum of dout * xhat over the chunk.
__global__ void rmsnorm_backward_weight_kernel(float* partial, const float* dout, const float* x, const float* rstd,
                                               int64_t n, int64_t c) {
  __shared__ float tile[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * int64_t(kChunkRows), r1 = min(n, r0 + kChunkRows);
  float acc = 0.f;
  if (col < c)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) acc += dout[r * c + col] * (x[r * c + col] * rstd[r]);
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < c) {
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) s += tile[j][threadIdx.x];
    partial[blockIdx.y * c + col] = s;
  }
}

__global__ void rmsnorm_backward_reduce_kernel(float* dweight, const float* partial, int64_t chunks, int64_t c) {
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= c) return;
  float s = 0.f;
  for (int64_t ch = 0; ch < chunks; ++ch) s += partial[ch * c + col];
  dweight[col] = s;
}

int64_t chunks_for(int64_t n) { return n == 0 ? 1 : (n + kChunkRows - 1) / kChunkRows; }

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int64_t n, int64_t c, float eps,
                     cudaStream_t stream) {
  if (n == 0) return;
  rmsnorm_forward_kernel<<<ceil_div(n, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(out, rstd, x, weight, n,
                                                                                            c, eps);
  LMF_CUDA_LAUNCH_CHECK();
}

int64_t rmsnorm_backward_workspace(int64_t n, int64_t c) { return chunks_for(n) * c; }

void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x, const float* weight,
                      const float* rstd, int64_t n, int64_t c, float* workspace, cudaStream_t stream) {
  if (dx && n > 0) {
    rmsnorm_backward_dx_kernel<<<ceil_div(n, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(dx, dout, x, weight,
                                                                                                  rstd, n, c);
    LMF_CUDA_LAUNCH_CHECK();
  }
  if (!dweight) return;
  const int64_t chunks = chunks_for(n);
  rmsnorm_backward_weight_kernel<<<dim3(ceil_div(c, 32), static_cast<unsigned>(chunks)), dim3(32, 8), 0, stream>>>(
      workspace, dout, x, rstd, n, c);
  LMF_CUDA_LAUNCH_CHECK();
  rmsnorm_backward_reduce_kernel<<<ceil_div(c, 256), 256, 0, stream>>>(dweight, workspace, chunks, c);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
