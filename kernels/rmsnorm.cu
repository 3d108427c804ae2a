// RMS normalisation over the last dim (Hugging Face's LlamaRMSNorm): x (N, C) -> out (N, C) =
// x * rstd * w, rstd (N) = rsqrt(mean(x²) + eps) saved. One warp per row, as layernorm.cu.
// The fused form adds a residual first (sum = x + y written once, then normalised in the same
// pass), the pre-norm residual of a Llama layer. Activations may be f32 or bf16 on every side, the
// statistics f32; a bf16 sum is rounded before the statistics (what a separate add then rms_norm do).
// Gradient (xhat = x * rstd, dnorm = dout * w):
//   dx = rstd * (dnorm - xhat * mean_c(dnorm * xhat)) [+ dresidual]   (written)
//   dw = sum_n dout * xhat                                           (written)
// dw: each block sums a chunk of kChunkRows rows for 32 columns into workspace (chunks, C), then
// one fixed pass adds the chunks: deterministic, no atomics.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kChunkRows = 256;

struct NormIo {
  void* sum;  // (N, C) or null (plain rms norm)
  void* out;
  const void* x;
  const void* y;  // or null
  bool sum_bf16, out_bf16, x_bf16, y_bf16;
};

__global__ void rmsnorm_forward_kernel(NormIo io, float* rstd, const float* weight, int64_t n, int64_t c, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= n) return;
  const int64_t base = row * c;
  const void* src = io.x;
  bool src_bf16 = io.x_bf16;
  float s = 0.f;
  if (io.y) {  // the sum is written, then read back by the same lane (its own elements)
    for (int64_t j = lane; j < c; j += 32) {
      const float v = round_as(io.sum_bf16, load_elem(io.x, io.x_bf16, base + j) + load_elem(io.y, io.y_bf16, base + j));
      store_elem(io.sum, io.sum_bf16, base + j, v);
      s += v * v;
    }
    src = io.sum;
    src_bf16 = io.sum_bf16;
  } else {
    for (int64_t j = lane; j < c; j += 32) {
      const float v = load_elem(src, src_bf16, base + j);
      s += v * v;
    }
  }
  const float r = rsqrtf(warp_sum(s) / static_cast<float>(c) + eps);
  for (int64_t j = lane; j < c; j += 32)
    store_elem(io.out, io.out_bf16, base + j, weight[j] * (load_elem(src, src_bf16, base + j) * r));
  if (lane == 0) rstd[row] = r;
}

__global__ void rmsnorm_backward_dx_kernel(float* dx, const float* dout, const void* x, bool x_bf16,
                                           const float* weight, const float* rstd, const float* dresidual, int64_t n,
                                           int64_t c) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= n) return;
  const int64_t base = row * c;
  const float* g = dout + base;
  const float r = rstd[row];
  float s = 0.f;
  for (int64_t j = lane; j < c; j += 32) s += g[j] * weight[j] * (load_elem(x, x_bf16, base + j) * r);
  const float mean_dnorm_xhat = warp_sum(s) / static_cast<float>(c);
  float* d = dx + base;
  for (int64_t j = lane; j < c; j += 32) {
    const float v = r * (g[j] * weight[j] - load_elem(x, x_bf16, base + j) * r * mean_dnorm_xhat);
    d[j] = dresidual ? v + dresidual[base + j] : v;
  }
}

// Block (32, 8), grid (ceil(C / 32), chunks): partial (chunk, c) = sum of dout * xhat over the chunk.
__global__ void rmsnorm_backward_weight_kernel(float* partial, const float* dout, const void* x, bool x_bf16,
                                               const float* rstd, int64_t n, int64_t c) {
  __shared__ float tile[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * int64_t(kChunkRows), r1 = min(n, r0 + kChunkRows);
  float acc = 0.f;
  if (col < c)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8)
      acc += dout[r * c + col] * (load_elem(x, x_bf16, r * c + col) * rstd[r]);
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

bool is_bf16(ElemType t, const char* what) {
  if (t != ElemType::f32 && t != ElemType::bf16)
    throw CudaError(std::string("rmsnorm: ") + what + " must be f32 or bf16");
  return t == ElemType::bf16;
}

void launch_forward(const NormIo& io, float* rstd, const float* weight, int64_t n, int64_t c, float eps,
                    cudaStream_t stream) {
  if (n == 0) return;
  check_grid("rmsnorm_forward", "rows / 8 (B*T)", ceil_div(n, kWarpsPerBlock), kMaxGridX);
  rmsnorm_forward_kernel<<<ceil_div(n, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(io, rstd, weight, n, c, eps);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int64_t n, int64_t c, float eps,
                     cudaStream_t stream) {
  launch_forward(NormIo{nullptr, out, x, nullptr, false, false, false, false}, rstd, weight, n, c, eps, stream);
}

void add_rmsnorm_forward(void* sum, ElemType sum_type, void* out, ElemType out_type, float* rstd, const void* x,
                         ElemType x_type, const void* y, ElemType y_type, const float* weight, int64_t n, int64_t c,
                         float eps, cudaStream_t stream) {
  if (y != nullptr && sum == nullptr) throw CudaError("add_rmsnorm_forward: y needs a sum output");
  const NormIo io{y ? sum : nullptr, out, x, y,
                  y ? is_bf16(sum_type, "sum") : false, is_bf16(out_type, "out"), is_bf16(x_type, "x"),
                  y ? is_bf16(y_type, "y") : false};
  launch_forward(io, rstd, weight, n, c, eps, stream);
}

int64_t rmsnorm_backward_workspace(int64_t n, int64_t c) { return chunks_for(n) * c; }

void rmsnorm_backward_typed(float* dx, float* dweight, const float* dout, const void* x, ElemType x_type,
                            const float* weight, const float* rstd, const float* dresidual, int64_t n, int64_t c,
                            float* workspace, cudaStream_t stream) {
  const bool x_bf16 = is_bf16(x_type, "x");
  if (dx && n > 0) {
    check_grid("rmsnorm_backward", "rows / 8 (B*T)", ceil_div(n, kWarpsPerBlock), kMaxGridX);
    rmsnorm_backward_dx_kernel<<<ceil_div(n, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(
        dx, dout, x, x_bf16, weight, rstd, dresidual, n, c);
    LMF_CUDA_LAUNCH_CHECK();
  }
  if (!dweight) return;
  const int64_t chunks = chunks_for(n);
  check_grid("rmsnorm_backward", "row chunks of 256 (B*T / 256)", chunks, kMaxGridYZ);
  rmsnorm_backward_weight_kernel<<<dim3(ceil_div(c, 32), static_cast<unsigned>(chunks)), dim3(32, 8), 0, stream>>>(
      workspace, dout, x, x_bf16, rstd, n, c);
  LMF_CUDA_LAUNCH_CHECK();
  rmsnorm_backward_reduce_kernel<<<ceil_div(c, 256), 256, 0, stream>>>(dweight, workspace, chunks, c);
  LMF_CUDA_LAUNCH_CHECK();
}

void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x, const float* weight,
                      const float* rstd, int64_t n, int64_t c, float* workspace, cudaStream_t stream) {
  rmsnorm_backward_typed(dx, dweight, dout, x, ElemType::f32, weight, rstd, nullptr, n, c, workspace, stream);
}

}  // namespace lmf::kernels
