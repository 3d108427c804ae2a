// Layer normalisation over the last dim: x (N, C) -> out (N, C) = (x - mean) * rstd * w + b, saving
// mean (N) and rstd (N) = 1/sqrt(var + eps) (biased variance). One warp per row: C = 768 is 24
// elements per lane, the row stays in L1 and two warp reductions give the statistics. The variance
// is taken around the mean (two passes over the row) like the CPU, not E[x²] - E[x]².
// The fused form also adds a residual first: sum = x + y is written once and normalised in the same
// pass (GPT-2's `x + attn(ln_1(x))` then `ln_2`), so the sum is not read back by a second kernel.
// Activations may be f32 or bf16 (mixed precision) on every side; the statistics and the
// arithmetic are f32. A bf16 sum is rounded before the statistics are taken, so the result is what
// a separate add (which rounds its bf16 output) followed by layer_norm computes.
// Gradient (xhat = (x - mean) * rstd, dnorm = dout * w):
//   dx = rstd * (dnorm - mean_c(dnorm) - xhat * mean_c(dnorm * xhat)) [+ dresidual]   (written)
//   dw = sum_n dout * xhat, db = sum_n dout                                           (written)
// dw, db: each block sums a chunk of kChunkRows rows for 32 columns into workspace (chunks, 2, C),
// then one fixed pass adds the chunks: deterministic, no atomics.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kChunkRows = 256;

struct NormIo {
  void* sum;  // (N, C) or null (plain layer norm)
  void* out;  // (N, C)
  const void* x;
  const void* y;  // (N, C) or null
  bool sum_bf16, out_bf16, x_bf16, y_bf16;
};

__global__ void layernorm_forward_kernel(NormIo io, float* mean, float* rstd, const float* weight,
                                         const float* bias, int64_t n, int64_t c, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= n) return;
  const int64_t base = row * c;
  // The row's input as the statistics see it: x, or the (rounded) sum x + y, which is written here
  // and read back by the same lane below (its own elements: no synchronisation needed).
  const void* src = io.x;
  bool src_bf16 = io.x_bf16;
  float s = 0.f;
  if (io.y) {
    for (int64_t j = lane; j < c; j += 32) {
      const float v = round_as(io.sum_bf16, load_elem(io.x, io.x_bf16, base + j) + load_elem(io.y, io.y_bf16, base + j));
      store_elem(io.sum, io.sum_bf16, base + j, v);
      s += v;
    }
    src = io.sum;
    src_bf16 = io.sum_bf16;
  } else {
    for (int64_t j = lane; j < c; j += 32) s += load_elem(src, src_bf16, base + j);
  }
  const float m = warp_sum(s) / static_cast<float>(c);
  float v = 0.f;
  for (int64_t j = lane; j < c; j += 32) {
    const float d = load_elem(src, src_bf16, base + j) - m;
    v += d * d;
  }
  const float r = rsqrtf(warp_sum(v) / static_cast<float>(c) + eps);
  for (int64_t j = lane; j < c; j += 32) {
    const float y = (load_elem(src, src_bf16, base + j) - m) * r * weight[j];
    store_elem(io.out, io.out_bf16, base + j, bias ? y + bias[j] : y);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

__global__ void layernorm_backward_dx_kernel(float* dx, const float* dout, const void* x, bool x_bf16,
                                             const float* weight, const float* mean, const float* rstd,
                                             const float* dresidual, int64_t n, int64_t c) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= n) return;
  const int64_t base = row * c;
  const float* g = dout + base;
  const float m = mean[row], r = rstd[row];
  float sum_dnorm = 0.f, sum_dnorm_xhat = 0.f;
  for (int64_t j = lane; j < c; j += 32) {
    const float dnorm = g[j] * weight[j];
    sum_dnorm += dnorm;
    sum_dnorm_xhat += dnorm * (load_elem(x, x_bf16, base + j) - m) * r;
  }
  const float mean_dnorm = warp_sum(sum_dnorm) / static_cast<float>(c);
  const float mean_dnorm_xhat = warp_sum(sum_dnorm_xhat) / static_cast<float>(c);
  float* d = dx + base;
  for (int64_t j = lane; j < c; j += 32) {
    const float xhat = (load_elem(x, x_bf16, base + j) - m) * r;
    const float v = r * (g[j] * weight[j] - mean_dnorm - xhat * mean_dnorm_xhat);
    d[j] = dresidual ? v + dresidual[base + j] : v;
  }
}

// Block (32, 8), grid (ceil(C / 32), chunks): partial (chunk, 0, c) = sum dout * xhat,
// partial (chunk, 1, c) = sum dout over the chunk's rows.
__global__ void layernorm_backward_params_kernel(float* partial, const float* dout, const void* x, bool x_bf16,
                                                 const float* mean, const float* rstd, int64_t n, int64_t c) {
  __shared__ float tile_w[8][33], tile_b[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * int64_t(kChunkRows), r1 = min(n, r0 + kChunkRows);
  float aw = 0.f, ab = 0.f;
  if (col < c)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const float g = dout[r * c + col];
      aw += g * (load_elem(x, x_bf16, r * c + col) - mean[r]) * rstd[r];
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

bool is_bf16(ElemType t, const char* what) {
  if (t != ElemType::f32 && t != ElemType::bf16)
    throw CudaError(std::string("layernorm: ") + what + " must be f32 or bf16");
  return t == ElemType::bf16;
}

void launch_forward(const NormIo& io, float* mean, float* rstd, const float* weight, const float* bias, int64_t n,
                    int64_t c, float eps, cudaStream_t stream) {
  if (n == 0) return;
  check_grid("layernorm_forward", "rows / 8 (B*T)", ceil_div(n, kWarpsPerBlock), kMaxGridX);
  layernorm_forward_kernel<<<ceil_div(n, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(io, mean, rstd, weight,
                                                                                             bias, n, c, eps);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t n, int64_t c, float eps, cudaStream_t stream) {
  launch_forward(NormIo{nullptr, out, x, nullptr, false, false, false, false}, mean, rstd, weight, bias, n, c, eps,
                 stream);
}

void add_layernorm_forward(void* sum, ElemType sum_type, void* out, ElemType out_type, float* mean, float* rstd,
                           const void* x, ElemType x_type, const void* y, ElemType y_type, const float* weight,
                           const float* bias, int64_t n, int64_t c, float eps, cudaStream_t stream) {
  if (y != nullptr && sum == nullptr) throw CudaError("add_layernorm_forward: y needs a sum output");
  const NormIo io{y ? sum : nullptr, out, x, y,
                  y ? is_bf16(sum_type, "sum") : false, is_bf16(out_type, "out"), is_bf16(x_type, "x"),
                  y ? is_bf16(y_type, "y") : false};
  launch_forward(io, mean, rstd, weight, bias, n, c, eps, stream);
}

int64_t layernorm_backward_workspace(int64_t n, int64_t c) { return chunks_for(n) * 2 * c; }

void layernorm_backward_typed(float* dx, float* dweight, float* dbias, const float* dout, const void* x,
                              ElemType x_type, const float* weight, const float* mean, const float* rstd,
                              const float* dresidual, int64_t n, int64_t c, float* workspace, cudaStream_t stream) {
  const bool x_bf16 = is_bf16(x_type, "x");
  if (dx && n > 0) {
    check_grid("layernorm_backward", "rows / 8 (B*T)", ceil_div(n, kWarpsPerBlock), kMaxGridX);
    layernorm_backward_dx_kernel<<<ceil_div(n, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(
        dx, dout, x, x_bf16, weight, mean, rstd, dresidual, n, c);
    LMF_CUDA_LAUNCH_CHECK();
  }
  if (!dweight && !dbias) return;
  const int64_t chunks = chunks_for(n);
  check_grid("layernorm_backward", "row chunks of 256 (B*T / 256)", chunks, kMaxGridYZ);
  layernorm_backward_params_kernel<<<dim3(ceil_div(c, 32), static_cast<unsigned>(chunks)), dim3(32, 8), 0,
                                     stream>>>(workspace, dout, x, x_bf16, mean, rstd, n, c);
  LMF_CUDA_LAUNCH_CHECK();
  layernorm_backward_reduce_kernel<<<ceil_div(c, 256), 256, 0, stream>>>(dweight, dbias, workspace,
                                                                          chunks, c);
  LMF_CUDA_LAUNCH_CHECK();
}

void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t n, int64_t c,
                        float* workspace, cudaStream_t stream) {
  layernorm_backward_typed(dx, dweight, dbias, dout, x, ElemType::f32, weight, mean, rstd, nullptr, n, c, workspace,
                           stream);
}

}  // namespace lmf::kernels
