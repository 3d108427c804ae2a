// CPU kernels of the primitive ops: general broadcasting binary ops and their reduction back to an
// input's shape, the unary table (kernels/common/op_table.h), max over a dim, row copies (cat,
// slice backward), where and gather. Plain loops, OpenMP over independent outputs only, so every
// result is the same for any thread count. The GPT-2 hot path does not come here (its residual adds
// and biases keep the periodic kernels of elementwise.cpp).
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace lmf::cpu {
using kernels::BinaryOp;
using kernels::BroadcastLayout;
using kernels::ReduceLayout;
using kernels::UnaryOp;
namespace {

constexpr int64_t kParallelElems = 1 << 15;

int64_t layout_numel(const BroadcastLayout& l) {
  int64_t n = 1;
  for (int d = 0; d < l.nd; ++d) n *= l.shape[d];
  return n;
}

// Calls f(row_start_flat_index, offsets[3], inner, inner_strides[3]) for each row of the last dim.
template <class F>
void for_each_row(const BroadcastLayout& l, F f) {
  const int64_t n = layout_numel(l);
  if (n == 0) return;
  const int last = l.nd - 1;
  const int64_t inner = l.nd > 0 ? l.shape[last] : 1;
  const int64_t rows = n / inner;
  const int64_t s0 = l.nd > 0 ? l.strides[0][last] : 0, s1 = l.nd > 0 ? l.strides[1][last] : 0,
                s2 = l.nd > 0 ? l.strides[2][last] : 0;
#pragma omp parallel for schedule(static) if (n > kParallelElems && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r * inner;
    f(i, kernels::broadcast_offset(l, 0, i), kernels::broadcast_offset(l, 1, i),
      kernels::broadcast_offset(l, 2, i), inner, s0, s1, s2);
  }
}

template <UnaryOp kOp>
void unary_map(float* out, const float* x, float p, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
  for (int64_t i = 0; i < n; ++i) out[i] = kernels::unary_value(kOp, x[i], p);
}

template <UnaryOp kOp>
void unary_grad_map(float* dx, const float* dout, const float* x, const float* y, float p, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
  for (int64_t i = 0; i < n; ++i) dx[i] = dout[i] * kernels::unary_derivative(kOp, x[i], y[i], p);
}

}  // namespace

void broadcast_binary(BinaryOp op, float* out, const float* a, const float* b, const BroadcastLayout& l) {
  for_each_row(l, [&](int64_t i, int64_t oa, int64_t ob, int64_t, int64_t inner, int64_t sa, int64_t sb,
                      int64_t) {
    for (int64_t j = 0; j < inner; ++j) out[i + j] = kernels::binary_value(op, a[oa + j * sa], b[ob + j * sb]);
  });
}

void broadcast_binary_backward(BinaryOp op, float* ga, float* gb, const float* g, const float* a,
                               const float* b, const BroadcastLayout& l) {
  for_each_row(l, [&](int64_t i, int64_t oa, int64_t ob, int64_t, int64_t inner, int64_t sa, int64_t sb,
                      int64_t) {
    for (int64_t j = 0; j < inner; ++j) {
      const float x = a ? a[oa + j * sa] : 0.f, y = b ? b[ob + j * sb] : 0.f;
      if (ga) ga[i + j] = kernels::binary_grad_a(op, g[i + j], x, y);
      if (gb) gb[i + j] = kernels::binary_grad_b(op, g[i + j], x, y);
    }
  });
}

void sum_to(float* out, const float* in, const ReduceLayout& l) {
  int64_t n_out = 1, n_red = 1;
  for (int d = 0; d < l.nk; ++d) n_out *= l.kept_shape[d];
  for (int d = 0; d < l.nr; ++d) n_red *= l.red_shape[d];
  // One output element per iteration, its reduced elements summed in index order in double.
#pragma omp parallel for schedule(static) if (n_out * n_red > kParallelElems && n_out > 1)
  for (int64_t o = 0; o < n_out; ++o) {
    int64_t base = 0, rest = o;
    for (int d = l.nk - 1; d >= 0; --d) {
      base += (rest % l.kept_shape[d]) * l.kept_stride[d];
      rest /= l.kept_shape[d];
    }
    double acc = 0.0;
    for (int64_t r = 0; r < n_red; ++r) {
      int64_t off = base, rr = r;
      for (int d = l.nr - 1; d >= 0; --d) {
        off += (rr % l.red_shape[d]) * l.red_stride[d];
        rr /= l.red_shape[d];
      }
      acc += in[off];
    }
    out[o] = static_cast<float>(acc);
  }
}

#define LMF_UNARY_CASES(X) \
  X(neg) X(exp) X(log) X(sqrt) X(rsqrt) X(tanh) X(sigmoid) X(silu) X(relu) X(pow)

void unary_forward(UnaryOp op, float* out, const float* x, float p, int64_t n) {
  switch (op) {
#define LMF_CASE(name) \
  case UnaryOp::name: unary_map<UnaryOp::name>(out, x, p, n); break;
    LMF_UNARY_CASES(LMF_CASE)
#undef LMF_CASE
  }
}

void unary_backward(UnaryOp op, float* dx, const float* dout, const float* x, const float* y, float p,
                    int64_t n) {
  switch (op) {
#define LMF_CASE(name) \
  case UnaryOp::name: unary_grad_map<UnaryOp::name>(dx, dout, x, y, p, n); break;
    LMF_UNARY_CASES(LMF_CASE)
#undef LMF_CASE
  }
}
#undef LMF_UNARY_CASES

void max_dim_forward(float* out, int32_t* argmax, const float* x, int64_t outer, int64_t d, int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * d * inner > kParallelElems && outer > 1)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < inner; ++j) {
      const float* col = x + o * d * inner + j;
      float best = col[0];
      int32_t at = 0;
      // The first maximum wins a tie; a NaN wins over numbers (and the first NaN over later ones).
      for (int64_t i = 1; i < d && !std::isnan(best); ++i) {
        const float v = col[i * inner];
        if (v > best || std::isnan(v)) {
          best = v;
          at = static_cast<int32_t>(i);
        }
      }
      out[o * inner + j] = best;
      argmax[o * inner + j] = at;
    }
  }
}

void max_dim_backward(float* dx, const float* dout, const int32_t* argmax, int64_t outer, int64_t d,
                      int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * d * inner > kParallelElems && outer > 1)
  for (int64_t o = 0; o < outer; ++o) {
    float* block = dx + o * d * inner;
    for (int64_t i = 0; i < d * inner; ++i) block[i] = 0.f;
    for (int64_t j = 0; j < inner; ++j) block[argmax[o * inner + j] * inner + j] = dout[o * inner + j];
  }
}

void copy_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows,
               int64_t width) {
#pragma omp parallel for schedule(static) if (rows * width > kParallelElems && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_stride;
    float* o = dst + r * dst_stride;
    for (int64_t j = 0; j < width; ++j) o[j] = s[j];
  }
}

void where_forward(float* out, const float* cond, const float* a, const float* b, const BroadcastLayout& l) {
  for_each_row(l, [&](int64_t i, int64_t oc, int64_t oa, int64_t ob, int64_t inner, int64_t sc, int64_t sa,
                      int64_t sb) {
    for (int64_t j = 0; j < inner; ++j) out[i + j] = cond[oc + j * sc] != 0.f ? a[oa + j * sa] : b[ob + j * sb];
  });
}

void where_backward(float* ga, float* gb, const float* g, const float* cond, const BroadcastLayout& l) {
  for_each_row(l, [&](int64_t i, int64_t oc, int64_t, int64_t, int64_t inner, int64_t sc, int64_t, int64_t) {
    for (int64_t j = 0; j < inner; ++j) {
      const bool take_a = cond[oc + j * sc] != 0.f;
      if (ga) ga[i + j] = take_a ? g[i + j] : 0.f;
      if (gb) gb[i + j] = take_a ? 0.f : g[i + j];
    }
  });
}

void gather_forward(float* out, const float* x, const int32_t* index, int64_t rows, int64_t n, int64_t k) {
#pragma omp parallel for schedule(static) if (rows * k > kParallelElems && rows > 1)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < k; ++j) out[r * k + j] = x[r * n + index[r * k + j]];
}

void gather_backward(float* dx, const float* dout, const int32_t* index, int64_t rows, int64_t n, int64_t k) {
  // One row per iteration, its k gradients added in order: deterministic without atomics.
#pragma omp parallel for schedule(static) if (rows * n > kParallelElems && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = dx + r * n;
    for (int64_t i = 0; i < n; ++i) row[i] = 0.f;
    for (int64_t j = 0; j < k; ++j) row[index[r * k + j]] += dout[r * k + j];
  }
}

}  // namespace lmf::cpu
