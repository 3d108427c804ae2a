// CUDA kernels of the primitive ops: broadcasting binary ops and the sum back to an input's shape,
// the unary table, max over a dim, row copies, where and gather. The formulas come from
// common/op_table.h, the same header the CPU kernels use. Every reduction is a fixed sequential loop
// per output element (no atomics), so results are the same run to run. None of this is on the GPT-2
// hot path, which keeps the periodic kernels of elementwise.cu. The broadcasting binary ops take a,
// b and out as f32 or bf16 storage (templates, f32 math): a bf16 operand is read in place; so do the
// unary ops (x and y = f(x) in one storage type, the output in x's).
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

#define LMF_GRID_STRIDE(i, n)                                                 \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

int64_t numel_of(const BroadcastLayout& l) {
  int64_t n = 1;
  for (int d = 0; d < l.nd; ++d) n *= l.shape[d];
  return n;
}

template <BinaryOp kOp, class TA, class TB, class TO>
__global__ void broadcast_binary_kernel(TO* out, const TA* a, const TB* b, BroadcastLayout l, int64_t n) {
  LMF_GRID_STRIDE(i, n) {
    out[i] = from_float<TO>(
        binary_value(kOp, to_float(a[broadcast_offset(l, 0, i)]), to_float(b[broadcast_offset(l, 1, i)])));
  }
}

template <BinaryOp kOp, class TA, class TB>
__global__ void broadcast_binary_backward_kernel(float* ga, float* gb, const float* g, const TA* a, const TB* b,
                                                 BroadcastLayout l, int64_t n) {
  LMF_GRID_STRIDE(i, n) {
    const float x = to_float(a[broadcast_offset(l, 0, i)]), y = to_float(b[broadcast_offset(l, 1, i)]);
    if (ga) ga[i] = binary_grad_a(kOp, g[i], x, y);
    if (gb) gb[i] = binary_grad_b(kOp, g[i], x, y);
  }
}

__global__ void sum_to_kernel(float* out, const float* in, ReduceLayout l, int64_t n_out, int64_t n_red) {
  LMF_GRID_STRIDE(o, n_out) {
    int64_t base = 0, rest = o;
    for (int d = l.nk - 1; d >= 0; --d) {
      base += (rest % l.kept_shape[d]) * l.kept_stride[d];
      rest /= l.kept_shape[d];
    }
    float acc = 0.f;
    for (int64_t r = 0; r < n_red; ++r) {
      int64_t off = base, rr = r;
      for (int d = l.nr - 1; d >= 0; --d) {
        off += (rr % l.red_shape[d]) * l.red_stride[d];
        rr /= l.red_shape[d];
      }
      acc += in[off];
    }
    out[o] = acc;
  }
}

// T: the storage of x and y = f(x) (f32 or bf16); f32 math, dout and dx f32.
template <UnaryOp kOp, class T>
__global__ void unary_kernel(T* out, const T* x, float p, int64_t n) {
  LMF_GRID_STRIDE(i, n) { out[i] = from_float<T>(unary_value(kOp, to_float(x[i]), p)); }
}

template <UnaryOp kOp, class T>
__global__ void unary_backward_kernel(float* dx, const float* dout, const T* x, const T* y, float p, int64_t n) {
  LMF_GRID_STRIDE(i, n) { dx[i] = dout[i] * unary_derivative(kOp, to_float(x[i]), to_float(y[i]), p); }
}

__global__ void max_dim_kernel(float* out, int32_t* argmax, const float* x, int64_t outer, int64_t d,
                               int64_t inner) {
  LMF_GRID_STRIDE(i, outer * inner) {
    const int64_t o = i / inner, j = i % inner;
    const float* col = x + o * d * inner + j;
    float best = col[0];
    int32_t at = 0;
    for (int64_t k = 1; k < d && !isnan(best); ++k) {  // first maximum wins; a NaN wins
      const float v = col[k * inner];
      if (v > best || isnan(v)) {
        best = v;
        at = static_cast<int32_t>(k);
      }
    }
    out[i] = best;
    argmax[i] = at;
  }
}

__global__ void max_dim_backward_kernel(float* dx, const float* dout, const int32_t* argmax, int64_t outer,
                                        int64_t d, int64_t inner) {
  LMF_GRID_STRIDE(i, outer * d * inner) {
    const int64_t j = i % inner, k = (i / inner) % d, o = i / (inner * d);
    dx[i] = argmax[o * inner + j] == k ? dout[o * inner + j] : 0.f;
  }
}

__global__ void copy_rows_kernel(float* dst, int64_t dst_stride, const float* src, int64_t src_stride,
                                 int64_t rows, int64_t width) {
  LMF_GRID_STRIDE(i, rows * width) {
    const int64_t r = i / width, j = i % width;
    dst[r * dst_stride + j] = src[r * src_stride + j];
  }
}

__global__ void where_kernel(float* out, const float* cond, const float* a, const float* b, BroadcastLayout l,
                             int64_t n) {
  LMF_GRID_STRIDE(i, n) {
    out[i] = cond[broadcast_offset(l, 0, i)] != 0.f ? a[broadcast_offset(l, 1, i)] : b[broadcast_offset(l, 2, i)];
  }
}

__global__ void where_backward_kernel(float* ga, float* gb, const float* g, const float* cond, BroadcastLayout l,
                                      int64_t n) {
  LMF_GRID_STRIDE(i, n) {
    const bool take_a = cond[broadcast_offset(l, 0, i)] != 0.f;
    if (ga) ga[i] = take_a ? g[i] : 0.f;
    if (gb) gb[i] = take_a ? 0.f : g[i];
  }
}

__global__ void gather_kernel(float* out, const float* x, const int32_t* index, int64_t rows, int64_t n,
                              int64_t k) {
  LMF_GRID_STRIDE(i, rows * k) { out[i] = x[(i / k) * n + index[i]]; }
}

__global__ void zero_kernel(float* out, int64_t n) {
  LMF_GRID_STRIDE(i, n) { out[i] = 0.f; }
}

// One thread per row adds its k gradients in order: deterministic, no atomics.
__global__ void gather_backward_kernel(float* dx, const float* dout, const int32_t* index, int64_t rows,
                                       int64_t n, int64_t k) {
  LMF_GRID_STRIDE(r, rows) {
    for (int64_t j = 0; j < k; ++j) dx[r * n + index[r * k + j]] += dout[r * k + j];
  }
}

}  // namespace

#define LMF_BINARY_CASES(X) X(add) X(sub) X(mul) X(div)
#define LMF_UNARY_CASES(X) \
  X(neg) X(exp) X(log) X(sqrt) X(rsqrt) X(tanh) X(sigmoid) X(silu) X(relu) X(pow)

void broadcast_binary_typed(BinaryOp op, void* out, ElemType out_type, const void* a, ElemType a_type,
                            const void* b, ElemType b_type, const BroadcastLayout& layout, cudaStream_t stream) {
  const bool a16 = storage_is_bf16(a_type, "broadcast_binary", "a");
  const bool b16 = storage_is_bf16(b_type, "broadcast_binary", "b");
  const bool o16 = storage_is_bf16(out_type, "broadcast_binary", "out");
  const int64_t n = numel_of(layout);
  if (n == 0) return;
  with_storage(a16, b16, o16, [&](auto ta, auto tb, auto to) {
    using TA = decltype(ta);
    using TB = decltype(tb);
    using TO = decltype(to);
    auto* o = static_cast<TO*>(out);
    const auto* pa = static_cast<const TA*>(a);
    const auto* pb = static_cast<const TB*>(b);
    switch (op) {
#define LMF_CASE(name)                                                                                   \
  case BinaryOp::name:                                                                                   \
    broadcast_binary_kernel<BinaryOp::name, TA, TB, TO><<<grid_for(n, kThreads), kThreads, 0, stream>>>( \
        o, pa, pb, layout, n);                                                                           \
    break;
      LMF_BINARY_CASES(LMF_CASE)
#undef LMF_CASE
    }
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void broadcast_binary(BinaryOp op, float* out, const float* a, const float* b, const BroadcastLayout& layout,
                      cudaStream_t stream) {
  broadcast_binary_typed(op, out, ElemType::f32, a, ElemType::f32, b, ElemType::f32, layout, stream);
}

void broadcast_binary_backward_typed(BinaryOp op, float* ga, float* gb, const float* g, const void* a,
                                     ElemType a_type, const void* b, ElemType b_type, const BroadcastLayout& layout,
                                     cudaStream_t stream) {
  const bool a16 = storage_is_bf16(a_type, "broadcast_binary_backward", "a");
  const bool b16 = storage_is_bf16(b_type, "broadcast_binary_backward", "b");
  const int64_t n = numel_of(layout);
  if (n == 0) return;
  with_storage(a16, b16, [&](auto ta, auto tb) {
    using TA = decltype(ta);
    using TB = decltype(tb);
    const auto* pa = static_cast<const TA*>(a);
    const auto* pb = static_cast<const TB*>(b);
    switch (op) {
#define LMF_CASE(name)                                                                        \
  case BinaryOp::name:                                                                        \
    broadcast_binary_backward_kernel<BinaryOp::name, TA, TB>                                  \
        <<<grid_for(n, kThreads), kThreads, 0, stream>>>(ga, gb, g, pa, pb, layout, n);      \
    break;
      LMF_BINARY_CASES(LMF_CASE)
#undef LMF_CASE
    }
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void broadcast_binary_backward(BinaryOp op, float* ga, float* gb, const float* g, const float* a, const float* b,
                               const BroadcastLayout& layout, cudaStream_t stream) {
  broadcast_binary_backward_typed(op, ga, gb, g, a, ElemType::f32, b, ElemType::f32, layout, stream);
}

void sum_to(float* out, const float* in, const ReduceLayout& layout, cudaStream_t stream) {
  int64_t n_out = 1, n_red = 1;
  for (int d = 0; d < layout.nk; ++d) n_out *= layout.kept_shape[d];
  for (int d = 0; d < layout.nr; ++d) n_red *= layout.red_shape[d];
  if (n_out == 0) return;
  sum_to_kernel<<<grid_for(n_out, kThreads), kThreads, 0, stream>>>(out, in, layout, n_out, n_red);
  LMF_CUDA_LAUNCH_CHECK();
}

void unary_forward_typed(UnaryOp op, void* out, const void* x, ElemType type, float p, int64_t n, cudaStream_t stream) {
  const bool x16 = storage_is_bf16(type, "unary_forward", "x");
  if (n == 0) return;
  with_storage(x16, [&](auto tx) {
    using T = decltype(tx);
    auto* o = static_cast<T*>(out);
    const auto* px = static_cast<const T*>(x);
    switch (op) {
#define LMF_CASE(name)                                                                                  \
  case UnaryOp::name:                                                                                   \
    unary_kernel<UnaryOp::name, T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(o, px, p, n);        \
    break;
      LMF_UNARY_CASES(LMF_CASE)
#undef LMF_CASE
    }
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void unary_forward(UnaryOp op, float* out, const float* x, float p, int64_t n, cudaStream_t stream) {
  unary_forward_typed(op, out, x, ElemType::f32, p, n, stream);
}

void unary_backward_typed(UnaryOp op, float* dx, const float* dout, const void* x, const void* y, ElemType type,
                          float p, int64_t n, cudaStream_t stream) {
  const bool x16 = storage_is_bf16(type, "unary_backward", "x");
  if (n == 0) return;
  with_storage(x16, [&](auto tx) {
    using T = decltype(tx);
    const auto* px = static_cast<const T*>(x);
    const auto* py = static_cast<const T*>(y);
    switch (op) {
#define LMF_CASE(name)                                                                                         \
  case UnaryOp::name:                                                                                          \
    unary_backward_kernel<UnaryOp::name, T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(dx, dout, px, py, p, n); \
    break;
      LMF_UNARY_CASES(LMF_CASE)
#undef LMF_CASE
    }
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void unary_backward(UnaryOp op, float* dx, const float* dout, const float* x, const float* y, float p, int64_t n,
                    cudaStream_t stream) {
  unary_backward_typed(op, dx, dout, x, y, ElemType::f32, p, n, stream);
}
#undef LMF_BINARY_CASES
#undef LMF_UNARY_CASES

void max_dim_forward(float* out, int32_t* argmax, const float* x, int64_t outer, int64_t d, int64_t inner,
                     cudaStream_t stream) {
  const int64_t n = outer * inner;
  if (n == 0) return;
  max_dim_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, argmax, x, outer, d, inner);
  LMF_CUDA_LAUNCH_CHECK();
}

void max_dim_backward(float* dx, const float* dout, const int32_t* argmax, int64_t outer, int64_t d,
                      int64_t inner, cudaStream_t stream) {
  const int64_t n = outer * d * inner;
  if (n == 0) return;
  max_dim_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dx, dout, argmax, outer, d, inner);
  LMF_CUDA_LAUNCH_CHECK();
}

void copy_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t width,
               cudaStream_t stream) {
  const int64_t n = rows * width;
  if (n == 0) return;
  copy_rows_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dst, dst_stride, src, src_stride, rows, width);
  LMF_CUDA_LAUNCH_CHECK();
}

void where_forward(float* out, const float* cond, const float* a, const float* b, const BroadcastLayout& layout,
                   cudaStream_t stream) {
  const int64_t n = numel_of(layout);
  if (n == 0) return;
  where_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, cond, a, b, layout, n);
  LMF_CUDA_LAUNCH_CHECK();
}

void where_backward(float* ga, float* gb, const float* g, const float* cond, const BroadcastLayout& layout,
                    cudaStream_t stream) {
  const int64_t n = numel_of(layout);
  if (n == 0) return;
  where_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(ga, gb, g, cond, layout, n);
  LMF_CUDA_LAUNCH_CHECK();
}

void gather_forward(float* out, const float* x, const int32_t* index, int64_t rows, int64_t n, int64_t k,
                    cudaStream_t stream) {
  if (rows * k == 0) return;
  gather_kernel<<<grid_for(rows * k, kThreads), kThreads, 0, stream>>>(out, x, index, rows, n, k);
  LMF_CUDA_LAUNCH_CHECK();
}

void gather_backward(float* dx, const float* dout, const int32_t* index, int64_t rows, int64_t n, int64_t k,
                     cudaStream_t stream) {
  if (rows * n == 0) return;
  zero_kernel<<<grid_for(rows * n, kThreads), kThreads, 0, stream>>>(dx, rows * n);
  LMF_CUDA_LAUNCH_CHECK();
  if (k == 0) return;
  gather_backward_kernel<<<grid_for(rows, 128), 128, 0, stream>>>(dx, dout, index, rows, n, k);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
