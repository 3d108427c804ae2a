// Layer normalisation over the last dim: x (N, C) -> out (N, C) = (x - mean) * rstd * w + b, saving
// mean (N) and rstd (N) = 1/sqrt(var + eps) (biased variance). One warp per row: C = 768 is 24
// floats per lane, the row stays in registers-and-L1 and two warp reductions give the statistics.
// The variance is taken around the mean (two passes over the row) like the CPU, not E[x²] - E[x]².
// Gradient (xhat = (x - mean) * rstd, dnorm = dout * w):
//   dx = rstd * (dnorm - mean_c(dnorm) - xhat * mean_c(dnorm * xhat))       (written)
//   dw = sum_n dout * xhat, db = sum_n dout                                 (written)
// dw, db: each block sums a chunk of kChunkRows rows for 32 columns into workspace (chunks, 2, C),
// then one fixed pass adds the chunks: deterministic, no atomics.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kChunkRows = 256;

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* x,
                                         const float* weight, const float* bias, int64_t n, int64_t c,
                                         float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= n) return;
  const float* xr = x + row * c;  // (C)
  float s = 0.f;
  for (int64_t j = lane; j < c; j += 32) s += xr[j];
  const float m = warp_sum(s) / static_cast<float>(c);
  float v = 0.f;
  for (int64_t j = lane; j < c; j += 32) {
    const float d = xr[j] - m;
    v += d * d;
  }
  const float r = rsqrtf(warp_sum(v) / static_cast<float>(c) + eps);
  float* orow = out + row * c;
  for (int64_t j = lane; j < c; j += 32) {
    const float y = (xr[j] - m) * r * weight[j];
    orow[j] = bias ? y + bias[j] : y;
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

__global__ void layernorm_backward_dx_kernel(float* dx, const float* dout, const float* x,
                                             const float* weight, const float* mean, const float* rstd,
                                             int64_t n, int64_t c) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= n) return;
  const float* g = dout + row * c;
  const float* xr = x + row * c;
  const float m = mean[row], r = rstd[row];
  float sum_dnorm = 0.f, sum_dnorm_xhat = 0.f;
  for (int64_t j = lane; j < c; j += 32) {
    const float dnorm = g[j] * weight[j];
    sum_dnorm += dnorm;
    sum_dnorm_xhat += dnorm * (xr[j] - m) * r;
  }
  const float mean_dnorm = warp_sum(sum_dnorm) / static_cast<float>(c);
  const float mean_dnorm_xhat = warp_sum(sum_dnorm_xhat) / static_cast<float>(c);
  float* d = dx + row * c;
  for (int64_t j = lane; j < c; j += 32) {
    const float xhat = (xr[j] - m) * r;
    d[j] = r * (g[j] * weight[j] - mean_dnorm - xhat * mean_dnorm_xhat);
  }
}

// Block (32, 8), grid (ceil(C / 32), chunks): partial (chunk, 0, c) = sum dout * xhat,
// partial (chunk, 1, c) = sum dout over the chunk's rows.
__global__ void layernorm_backward_params_kernel(float* partial, const float* dout, const float* x,
                                                 const float* mean, const float* rstd, int64_t n,
                                                 int64_t c) {
  __shared__ float tile_w[8][33], tile_b[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * int64_t(kChunkRows), r1 = min(n, r0 + kChunkRows);
  float aw = 0.f, ab = 0.f;
  if (col < c)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const float g = dout[r * c + col];
      aw += g * (x[r * c + col] - mean[r]) * rstd[r];
      ab += g;
    }
  tile_w[threadIdx.y][threadIdx.x] = aw;
  tile_b[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && col < c) {
    float sw = 0.f, sb = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      sw += tile_w[j][threadIdx.x];
      sb += tile_b[j][threadIdx.x];
    }
    partial[blockIdx.y * 2 * c + col] = sw;
    partial[blockIdx.y * 2 * c + c + col] = sb;
  }
}

__global__ void layernorm_backward_reduce_kernel(float* dweight, float* dbias, const float* partial,
                                                 int64_t chunks, int64_t c) {
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= c) return;
  float sw = 0.f, sb = 0.f;
  for (int64_t ch = 0; ch < chunks; ++ch) {
    sw += partial[ch * 2 * c + col];
    sb += partial[ch * 2 * c + c + col];
  }
  if (dweight) dweight[col] = sw;
  if (dbias) dbias[col] = sb;
}

int64_t chunks_for(int64_t n) { return n == 0 ? 1 : (n + kChunkRows - 1) / kChunkRows; }

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t n, int64_t c, float eps, cudaStream_t stream) {
  if (n == 0) return;
  layernorm_forward_kernel<<<ceil_div(n, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(
      out, mean, rstd, x, weight, bias, n, c, eps);
  LMF_CUDA_LAUNCH_CHECK();
}

int64_t layernorm_backward_workspace(int64_t n, int64_t c) { return chunks_for(n) * 2 * c; }

void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t n, int64_t c,
                        float* workspace, cudaStream_t stream) {
  if (dx && n > 0) {
    layernorm_backward_dx_kernel<<<ceil_div(n, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(
        dx, dout, x, weight, mean, rstd, n, c);
    LMF_CUDA_LAUNCH_CHECK();
  }
  if (!dweight && !dbias) return;
  const int64_t chunks = chunks_for(n);
  layernorm_backward_params_kernel<<<dim3(ceil_div(c, 32), static_cast<unsigned>(chunks)), dim3(32, 8), 0,
                                     stream>>>(workspace, dout, x, mean, rstd, n, c);
  LMF_CUDA_LAUNCH_CHECK();
  layernorm_backward_reduce_kernel<<<ceil_div(c, 256), 256, 0, stream>>>(dweight, dbias, workspace,
                                                                          chunks, c);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
