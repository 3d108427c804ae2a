// add, sub, mul and scale. The second operand broadcasts over leading dims (same shape, a suffix
// of a's shape, or one element), which covers residual adds, biases and scalar factors; the
// backward sums the gradient over the broadcast dims so db has b's shape.
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;
namespace {

// The number of elements of b, after checking that it broadcasts to a (b[i % NB] pairs with a[i]).
int64_t broadcast_period(const char* op, const Tensor& a, const Tensor& b) {
  check_f32(op, a, "a");
  check_f32(op, b, "b");
  check_same_device(op, a, "a", b, "b");
  const Shape &as = a.shape(), &bs = b.shape();
  const bool suffix =
      bs.size() <= as.size() && std::equal(bs.begin(), bs.end(), as.end() - bs.size());
  LMF_CHECK(suffix || b.numel() == 1, op, ": cannot broadcast b of shape ", shape_str(bs),
            " to a of shape ", shape_str(as),
            " (b must have a's shape, a suffix of it, or one element)");
  return b.numel();
}

enum class Kind { add, sub, mul };

Tensor binary_forward(const char* op, Kind kind, const Tensor& a_in, const Tensor& b_in, int64_t nb) {
  const Tensor a = a_in.contiguous_copy(), b = b_in.contiguous_copy();
  Tensor out = Tensor::empty(a.shape(), DType::f32, a.device());
  const int64_t n = a.numel();
  if (n == 0) return out;
  switch (a.device().type) {
    case DeviceType::cpu:
      if (kind == Kind::add) cpu::add_forward(out.data<float>(), a.data<float>(), b.data<float>(), n, nb);
      if (kind == Kind::sub) cpu::sub_forward(out.data<float>(), a.data<float>(), b.data<float>(), n, nb);
      if (kind == Kind::mul) cpu::mul_forward(out.data<float>(), a.data<float>(), b.data<float>(), n, nb);
      break;
    case DeviceType::cuda:
      if (kind == Kind::add) cuda::add_forward(a.device(), out.data<float>(), a.data<float>(), b.data<float>(), n, nb);
      if (kind == Kind::sub) cuda::sub_forward(a.device(), out.data<float>(), a.data<float>(), b.data<float>(), n, nb);
      if (kind == Kind::mul) cuda::mul_forward(a.device(), out.data<float>(), a.data<float>(), b.data<float>(), n, nb);
      break;
  }
  return out;
}

// Sums g (shape of a) over the broadcast leading dims into b's shape, times `sign`.
Tensor reduce_to(const char* op, const Tensor& g, const Shape& b_shape, int64_t nb, float sign) {
  const int64_t n = g.numel();
  if (nb == n && sign == 1.f) return g;
  Tensor db = Tensor::empty(b_shape, DType::f32, g.device());
  switch (g.device().type) {
    case DeviceType::cpu:
      if (nb == n) {
        cpu::scale_forward(db.data<float>(), g.data<float>(), sign, n);
      } else {
        cpu::column_sums(g.data<float>(), db.data<float>(), nb ? n / nb : 0, nb);
        if (sign != 1.f) cpu::scale_forward(db.data<float>(), db.data<float>(), sign, nb);
      }
      break;
    case DeviceType::cuda:
      if (nb == n) {
        cuda::scale_forward(g.device(), db.data<float>(), g.data<float>(), sign, n);
      } else {
        cuda::column_sums(g.device(), g.data<float>(), db.data<float>(), nb ? n / nb : 0, nb, sign);
      }
      break;
  }
  return db;
}

Tensor add_or_sub(const char* op, Kind kind, const Tensor& a, const Tensor& b) {
  const int64_t nb = broadcast_period(op, a, b);
  Tensor out = binary_forward(op, kind, a, b, nb);
  const float sign = kind == Kind::sub ? -1.f : 1.f;
  const bool need_b = b.requires_grad();
  return record(out, op, {a, b}, [op, nb, sign, need_b, b_shape = b.shape()](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    return std::vector<Tensor>{g, need_b ? reduce_to(op, g, b_shape, nb, sign) : Tensor()};
  });
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return add_or_sub("add", Kind::add, a, b); }

Tensor sub(const Tensor& a, const Tensor& b) { return add_or_sub("sub", Kind::sub, a, b); }

Tensor mul(const Tensor& a, const Tensor& b) {
  const int64_t nb = broadcast_period("mul", a, b);
  Tensor out = binary_forward("mul", Kind::mul, a, b, nb);
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  // Each input's gradient needs the other input.
  const Tensor a_saved = need_b ? a.contiguous_copy().detach() : Tensor();
  const Tensor b_saved = need_a ? b.contiguous_copy().detach() : Tensor();
  return record(out, "mul", {a, b}, [=, a_shape = a.shape(), b_shape = b.shape()](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    Tensor da = need_a ? Tensor::empty(a_shape, DType::f32, g.device()) : Tensor();
    Tensor db = need_b ? Tensor::empty(b_shape, DType::f32, g.device()) : Tensor();
    const int64_t n = g.numel();
    if (n == 0) return std::vector<Tensor>{da, db};
    switch (g.device().type) {
      case DeviceType::cpu:
        cpu::mul_backward(need_a ? da.data<float>() : nullptr, need_b ? db.data<float>() : nullptr,
                          g.data<float>(), need_b ? a_saved.data<float>() : nullptr,
                          need_a ? b_saved.data<float>() : nullptr, n, nb);
        break;
      case DeviceType::cuda:
        cuda::mul_backward(g.device(), need_a ? da.data<float>() : nullptr, need_b ? db.data<float>() : nullptr,
                           g.data<float>(), need_b ? a_saved.data<float>() : nullptr,
                           need_a ? b_saved.data<float>() : nullptr, n, nb);
        break;
    }
    return std::vector<Tensor>{da, db};
  });
}

namespace {
Tensor scale_impl(const Tensor& a_in, float factor) {
  const Tensor a = a_in.contiguous_copy();
  Tensor out = Tensor::empty(a.shape(), DType::f32, a.device());
  switch (a.device().type) {
    case DeviceType::cpu: cpu::scale_forward(out.data<float>(), a.data<float>(), factor, a.numel()); break;
    case DeviceType::cuda: cuda::scale_forward(a.device(), out.data<float>(), a.data<float>(), factor, a.numel()); break;
  }
  return out;
}
}  // namespace

Tensor scale(const Tensor& a, float factor) {
  check_f32("scale", a, "a");
  Tensor out = scale_impl(a, factor);
  return record(out, "scale", {a}, [factor](const Tensor& g) {
    return std::vector<Tensor>{scale_impl(g, factor)};
  });
}

}  // namespace lmf
