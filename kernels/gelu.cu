// GELU with GPT-2's tanh approximation, elementwise on (N) = (B, T, 4C) activations.
//   gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
// Gradient: dx = dout * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).
// tanhf (not the fast approximate tanh) keeps the result within a few ulp of the CPU reference.
// x and out are f32 or bf16 storage (templates, f32 math): a bf16 activation is read and written in
// place, with no widened copy, and the output rounded once from the f32 value.
// The backward of linear + GELU (gelu_bias_backward) also sums dpre over the rows for the bias
// gradient while dpre is in registers: per-chunk partials then one fixed pass, deterministic.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// TIn, TOut: the storage types (float or bf16); the math is f32 in registers either way.
template <class TIn, class TOut>
__global__ void gelu_forward_kernel(TOut* out, const TIn* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float xi = to_float(x[i]);
    const float u = kSqrt2OverPi * (xi + kCubic * xi * xi * xi);
    out[i] = from_float<TOut>(0.5f * xi * (1.0f + tanhf(u)));
  }
}

template <class TIn>
__global__ void gelu_backward_kernel(float* dx, const float* dout, const TIn* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float xi = to_float(x[i]);
    const float u = kSqrt2OverPi * (xi + kCubic * xi * xi * xi);
    const float th = tanhf(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * xi * xi);
    dx[i] = dout[i] * (0.5f * (1.0f + th) + 0.5f * xi * (1.0f - th * th) * du);
  }
}

__device__ __forceinline__ float gelu_grad(float xi) {
  const float u = kSqrt2OverPi * (xi + kCubic * xi * xi * xi);
  const float th = tanhf(u);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * xi * xi);
  return 0.5f * (1.0f + th) + 0.5f * xi * (1.0f - th * th) * du;
}

constexpr int kChunkRows = 256;

// Block (32, 8), grid (ceil(cols / 32), chunks): dpre (rows, cols) = dout * gelu'(pre) for the
// chunk's rows, and partial (chunk, col) = the chunk's column sums of dpre (null: no bias).
__global__ void gelu_bias_backward_kernel(float* dpre, float* partial, const float* dout, const void* pre,
                                          bool pre_bf16, int64_t rows, int64_t cols) {
  __shared__ float tile[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * int64_t(kChunkRows), r1 = min(rows, r0 + kChunkRows);
  float acc = 0.f;
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const int64_t i = r * cols + col;
      const float xi = pre_bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(pre)[i])
                                : static_cast<const float*>(pre)[i];
      const float d = dout[i] * gelu_grad(xi);
      dpre[i] = d;
      acc += d;
    }
  if (!partial) return;
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) s += tile[j][threadIdx.x];
    partial[blockIdx.y * cols + col] = s;
  }
}

__global__ void bias_reduce_kernel(float* dbias, const float* partial, int64_t chunks, int64_t cols,
                                   bool accumulate) {
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= cols) return;
  float s = 0.f;
  for (int64_t ch = 0; ch < chunks; ++ch) s += partial[ch * cols + col];
  dbias[col] = accumulate ? dbias[col] + s : s;
}

int64_t chunks_for(int64_t rows) { return rows == 0 ? 1 : (rows + kChunkRows - 1) / kChunkRows; }

}  // namespace

int64_t gelu_bias_backward_workspace(int64_t rows, int64_t cols) { return chunks_for(rows) * cols; }

void gelu_bias_backward(float* dpre, float* dbias, const float* dout, const void* pre, ElemType pre_type,
                        int64_t rows, int64_t cols, bool accumulate, float* workspace, cudaStream_t stream) {
  if (pre_type != ElemType::f32 && pre_type != ElemType::bf16)
    throw CudaError("gelu_bias_backward: pre must be f32 or bf16");
  if (cols == 0) return;
  const int64_t chunks = chunks_for(rows);
  check_grid("gelu_bias_backward", "row chunks of 256 (B*T / 256)", chunks, kMaxGridYZ);
  if (rows > 0) {
    gelu_bias_backward_kernel<<<dim3(ceil_div(cols, 32), static_cast<unsigned>(chunks)), dim3(32, 8), 0, stream>>>(
        dpre, dbias ? workspace : nullptr, dout, pre, pre_type == ElemType::bf16, rows, cols);
    LMF_CUDA_LAUNCH_CHECK();
  } else if (dbias) {
    LMF_CUDA_CHECK(cudaMemsetAsync(workspace, 0, sizeof(float) * cols, stream));
  }
  if (!dbias) return;
  bias_reduce_kernel<<<ceil_div(cols, 256), 256, 0, stream>>>(dbias, workspace, chunks, cols, accumulate);
  LMF_CUDA_LAUNCH_CHECK();
}

void gelu_forward_typed(void* out, ElemType out_type, const void* x, ElemType x_type, int64_t n,
                        cudaStream_t stream) {
  const bool x16 = storage_is_bf16(x_type, "gelu_forward", "x");
  const bool out16 = storage_is_bf16(out_type, "gelu_forward", "out");
  if (n == 0) return;
  with_storage(x16, out16, [&](auto tin, auto tout) {
    using TIn = decltype(tin);
    using TOut = decltype(tout);
    gelu_forward_kernel<TIn, TOut><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<TOut*>(out), static_cast<const TIn*>(x), n);
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void gelu_backward_typed(float* dx, const float* dout, const void* x, ElemType x_type, int64_t n,
                         cudaStream_t stream) {
  const bool x16 = storage_is_bf16(x_type, "gelu_backward", "x");
  if (n == 0) return;
  with_storage(x16, [&](auto tin) {
    using TIn = decltype(tin);
    gelu_backward_kernel<TIn><<<grid_for(n, kThreads), kThreads, 0, stream>>>(dx, dout, static_cast<const TIn*>(x), n);
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void gelu_forward(float* out, const float* x, int64_t n, cudaStream_t stream) {
  gelu_forward_typed(out, ElemType::f32, x, ElemType::f32, n, stream);
}

void gelu_backward(float* dx, const float* dout, const float* x, int64_t n, cudaStream_t stream) {
  gelu_backward_typed(dx, dout, x, ElemType::f32, n, stream);
}

}  // namespace lmf::kernels
