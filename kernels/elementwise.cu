// add, sub, mul, scale with a periodic second operand (same shape, suffix broadcast such as a bias
// (C) over (B, T, C), or a scalar), their backward reductions, and the in-place axpy used for
// gradient accumulation. Memory-bound: one grid-stride loop per op.
// Shapes: a, out (N); b (NB), N % NB == 0, b read as b[i % NB].
// Gradient: da = dout (add/sub) or dout * b (mul); db = sum over the broadcast rows of dout (* a),
// computed by column_sums: x viewed as (N / NB, NB), one fixed reduction tree per column.
// a, b and out are f32 or bf16 storage (templates, f32 math in registers): a bf16 operand of a mixed-
// precision add or mul is read in place and a bf16 result rounded once; gradients stay f32.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

enum class Binary { add, sub, mul };

template <Binary kOp, class TA, class TB, class TO>
__global__ void binary_kernel(TO* out, const TA* a, const TB* b, int64_t n, int64_t nb) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float x = to_float(a[i]), y = to_float(b[nb == n ? i : i % nb]);
    out[i] = from_float<TO>(kOp == Binary::add ? x + y : kOp == Binary::sub ? x - y : x * y);
  }
}

__global__ void scale_kernel(float* out, const float* a, float factor, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = a[i] * factor;
}

__global__ void axpy_kernel(float* dst, const float* src, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] += alpha * src[i];
}

template <class TA, class TB>
__global__ void mul_backward_same_kernel(float* da, float* db, const float* dout, const TA* a, const TB* b,
                                         int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (da) da[i] = dout[i] * to_float(b[i]);
    if (db) db[i] = dout[i] * to_float(a[i]);
  }
}

template <class TB>
__global__ void mul_backward_a_kernel(float* da, const float* dout, const TB* b, int64_t n, int64_t nb) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    da[i] = dout[i] * to_float(b[i % nb]);
}

// Column sums of (rows, cols): block (32, 8) owns 32 columns; threadIdx.y walks rows with stride 8,
// then the 8 partial sums are added in a fixed order. Rows are split over gridDim.y chunks whose
// partials land in `partial` (chunks, cols) and are summed by a second launch of this kernel.
constexpr int kColRowsPerChunk = 1024;

template <class TY>
__global__ void column_sums_kernel(float* out, const float* x, const TY* y, int64_t rows, int64_t cols,
                                   float factor) {
  __shared__ float tile[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * int64_t(kColRowsPerChunk);
  const int64_t r1 = min(rows, r0 + kColRowsPerChunk);
  float acc = 0.f;
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const float v = x[r * cols + col];
      acc += y ? v * to_float(y[r * cols + col]) : v;
    }
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float total = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) total += tile[j][threadIdx.x];
    out[blockIdx.y * cols + col] = total * factor;
  }
}

}  // namespace

void binary_forward_typed(BinaryOp op, void* out, ElemType out_type, const void* a, ElemType a_type, const void* b,
                          ElemType b_type, int64_t n, int64_t nb, cudaStream_t stream) {
  const bool a16 = storage_is_bf16(a_type, "binary_forward", "a");
  const bool b16 = storage_is_bf16(b_type, "binary_forward", "b");
  const bool o16 = storage_is_bf16(out_type, "binary_forward", "out");
  if (op == BinaryOp::div) throw CudaError("binary_forward: div takes the broadcasting path (broadcast_binary)");
  if (n == 0) return;
  with_storage(a16, b16, o16, [&](auto ta, auto tb, auto to) {
    using TA = decltype(ta);
    using TB = decltype(tb);
    using TO = decltype(to);
    auto* o = static_cast<TO*>(out);
    const auto* pa = static_cast<const TA*>(a);
    const auto* pb = static_cast<const TB*>(b);
    const unsigned grid = grid_for(n, kThreads);
    if (op == BinaryOp::add) binary_kernel<Binary::add, TA, TB, TO><<<grid, kThreads, 0, stream>>>(o, pa, pb, n, nb);
    if (op == BinaryOp::sub) binary_kernel<Binary::sub, TA, TB, TO><<<grid, kThreads, 0, stream>>>(o, pa, pb, n, nb);
    if (op == BinaryOp::mul) binary_kernel<Binary::mul, TA, TB, TO><<<grid, kThreads, 0, stream>>>(o, pa, pb, n, nb);
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void add_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb, cudaStream_t stream) {
  binary_forward_typed(BinaryOp::add, out, ElemType::f32, a, ElemType::f32, b, ElemType::f32, n, nb, stream);
}
void sub_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb, cudaStream_t stream) {
  binary_forward_typed(BinaryOp::sub, out, ElemType::f32, a, ElemType::f32, b, ElemType::f32, n, nb, stream);
}
void mul_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb, cudaStream_t stream) {
  binary_forward_typed(BinaryOp::mul, out, ElemType::f32, a, ElemType::f32, b, ElemType::f32, n, nb, stream);
}

void scale_forward(float* out, const float* a, float factor, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, a, factor, n);
  LMF_CUDA_LAUNCH_CHECK();
}

void add_inplace(float* dst, const float* src, float alpha, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  axpy_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dst, src, alpha, n);
  LMF_CUDA_LAUNCH_CHECK();
}

namespace {

template <class TY>
void column_sums_impl(float* out, const float* x, const TY* y, int64_t rows, int64_t cols, float factor,
                      cudaStream_t stream) {
  if (cols == 0) return;
  const dim3 block(32, 8);
  const int64_t chunks = rows <= kColRowsPerChunk ? 1 : (rows + kColRowsPerChunk - 1) / kColRowsPerChunk;
  if (chunks == 1) {
    column_sums_kernel<TY><<<dim3(ceil_div(cols, 32), 1), block, 0, stream>>>(out, x, y, rows, cols, factor);
    LMF_CUDA_LAUNCH_CHECK();
    return;
  }
  // Two passes: partial sums per row chunk, then the sum of the partials (their own column sums).
  float* partial = nullptr;
  LMF_CUDA_CHECK(cudaMallocAsync(&partial, sizeof(float) * chunks * cols, stream));
  column_sums_kernel<TY><<<dim3(ceil_div(cols, 32), static_cast<unsigned>(chunks)), block, 0, stream>>>(
      partial, x, y, rows, cols, 1.f);
  LMF_CUDA_LAUNCH_CHECK();
  column_sums_impl<float>(out, partial, nullptr, chunks, cols, factor, stream);
  LMF_CUDA_CHECK(cudaFreeAsync(partial, stream));
}

}  // namespace

void column_sums(float* out, const float* x, const float* y, int64_t rows, int64_t cols, float factor,
                 cudaStream_t stream) {
  column_sums_impl<float>(out, x, y, rows, cols, factor, stream);
}

void mul_backward_typed(float* da, float* db, const float* dout, const void* a, ElemType a_type, const void* b,
                        ElemType b_type, int64_t n, int64_t nb, cudaStream_t stream) {
  const bool a16 = storage_is_bf16(a_type, "mul_backward", "a");
  const bool b16 = storage_is_bf16(b_type, "mul_backward", "b");
  if (n == 0) return;
  with_storage(a16, b16, [&](auto ta, auto tb) {
    using TA = decltype(ta);
    using TB = decltype(tb);
    const auto* pa = static_cast<const TA*>(a);
    const auto* pb = static_cast<const TB*>(b);
    if (nb == n) {
      mul_backward_same_kernel<TA, TB><<<grid_for(n, kThreads), kThreads, 0, stream>>>(da, db, dout, pa, pb, n);
      LMF_CUDA_LAUNCH_CHECK();
      return;
    }
    if (da) {
      mul_backward_a_kernel<TB><<<grid_for(n, kThreads), kThreads, 0, stream>>>(da, dout, pb, n, nb);
      LMF_CUDA_LAUNCH_CHECK();
    }
    if (db) column_sums_impl<TA>(db, dout, pa, n / nb, nb, 1.f, stream);
  });
}

void mul_backward(float* da, float* db, const float* dout, const float* a, const float* b, int64_t n,
                  int64_t nb, cudaStream_t stream) {
  mul_backward_typed(da, db, dout, a, ElemType::f32, b, ElemType::f32, n, nb, stream);
}

}  // namespace lmf::kernels
