// The one table of elementwise math shared by the CPU kernels (src/backend/cpu/) and the CUDA
// kernels (kernels/*.cu): each unary op's f(x) and f'(x), each binary op's value and partial
// derivatives, and the broadcast layouts the strided kernels walk. Plain C++ with
// __host__ __device__ under nvcc, so both backends compute the same formulas from one place.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LMF_HD __host__ __device__ __forceinline__
#else
#define LMF_HD inline
#endif

namespace lmf::kernels {

/// Unary ops of the table; `p` is the scalar parameter (pow's exponent; unused by the others).
enum class UnaryOp : int { neg, exp, log, sqrt, rsqrt, tanh, sigmoid, silu, relu, pow };

LMF_HD float unary_value(UnaryOp op, float x, float p) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::exp: return ::expf(x);
    case UnaryOp::log: return ::logf(x);
    case UnaryOp::sqrt: return ::sqrtf(x);
    case UnaryOp::rsqrt: return 1.f / ::sqrtf(x);
    case UnaryOp::tanh: return ::tanhf(x);
    case UnaryOp::sigmoid: return 1.f / (1.f + ::expf(-x));
    case UnaryOp::silu: return x / (1.f + ::expf(-x));
    case UnaryOp::relu: return x > 0.f ? x : 0.f;
    case UnaryOp::pow: return ::powf(x, p);
  }
  return 0.f;
}

/// dy/dx at x, given y = unary_value(op, x, p) (several derivatives are cheapest from y).
/// relu'(0) = 0, as in PyTorch.
LMF_HD float unary_derivative(UnaryOp op, float x, float y, float p) {
  switch (op) {
    case UnaryOp::neg: return -1.f;
    case UnaryOp::exp: return y;
    case UnaryOp::log: return 1.f / x;
    case UnaryOp::sqrt: return 0.5f / y;
    case UnaryOp::rsqrt: return -0.5f * y * y * y;
    case UnaryOp::tanh: return 1.f - y * y;
    case UnaryOp::sigmoid: return y * (1.f - y);
    case UnaryOp::silu: {
      const float s = 1.f / (1.f + ::expf(-x));
      return s * (1.f + x * (1.f - s));
    }
    case UnaryOp::relu: return x > 0.f ? 1.f : 0.f;
    case UnaryOp::pow: return p == 0.f ? 0.f : p * ::powf(x, p - 1.f);
  }
  return 0.f;
}

/// Binary ops of the general broadcasting path.
enum class BinaryOp : int { add, sub, mul, div };

LMF_HD float binary_value(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return 0.f;
}
/// g * d(a op b)/da and g * d(a op b)/db.
LMF_HD float binary_grad_a(BinaryOp op, float g, float a, float b) {
  (void)a;
  switch (op) {
    case BinaryOp::add:
    case BinaryOp::sub: return g;
    case BinaryOp::mul: return g * b;
    case BinaryOp::div: return g / b;
  }
  return 0.f;
}
LMF_HD float binary_grad_b(BinaryOp op, float g, float a, float b) {
  switch (op) {
    case BinaryOp::add: return g;
    case BinaryOp::sub: return -g;
    case BinaryOp::mul: return g * a;
    case BinaryOp::div: return -g * a / (b * b);
  }
  return 0.f;
}

constexpr int kMaxBroadcastDims = 8;

/// Up to three operands read at broadcast strides over one output shape: output element with
/// multi-index (i0, ..., i_{nd-1}) (contiguous, row-major) reads operand k at
/// sum(i_d * strides[k][d]); a broadcast dim has stride 0.
struct BroadcastLayout {
  int nd = 0;
  int64_t shape[kMaxBroadcastDims] = {};
  int64_t strides[3][kMaxBroadcastDims] = {};
};

/// Sums a contiguous tensor `in` of the full shape down to a smaller one: output element o
/// (contiguous over the kept dims, in order) = sum over the reduced dims' index combinations of
/// in[sum(kept_i * kept_stride) + sum(red_j * red_stride)]. Strides are in elements of `in`.
struct ReduceLayout {
  int nk = 0, nr = 0;
  int64_t kept_shape[kMaxBroadcastDims] = {};
  int64_t kept_stride[kMaxBroadcastDims] = {};
  int64_t red_shape[kMaxBroadcastDims] = {};
  int64_t red_stride[kMaxBroadcastDims] = {};
};

/// The offset of flat element `i` of a row-major shape within operand k.
LMF_HD int64_t broadcast_offset(const BroadcastLayout& l, int k, int64_t i) {
  int64_t off = 0;
  for (int d = l.nd - 1; d >= 0; --d) {
    const int64_t idx = i % l.shape[d];
    i /= l.shape[d];
    off += idx * l.strides[k][d];
  }
  return off;
}

}  // namespace lmf::kernels
