// add, sub, mul, div and scale, with NumPy broadcasting on both operands. Two paths: when b is a's
// shape, a suffix of it (after dropping b's leading 1s) or one element -- residual adds, biases,
// scalar factors, the GPT-2 hot path -- the periodic contiguous kernels run as before; every other
// pair of shapes (and every div) takes the strided path of broadcast.h, whose backward computes the
// elementwise gradient at the output's shape and sums it back to each input's shape.
// A bf16 operand (mixed precision) is read in place by the CUDA kernels, f32 math in registers; the
// CPU kernels are f32-only, so there it is widened by a recorded cast (promoted()).
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/broadcast.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;
namespace {

// Whether b pairs with a as b[i % NB] (a's shape, a suffix of it after dropping b's leading 1s, or
// one element) and the output has a's shape: the periodic fast path.
bool periodic(const Tensor& a, const Tensor& b) {
  const Shape &as = a.shape(), &bs = b.shape();
  if (bs.size() > as.size()) return false;  // more dims than a: the output is not a's shape
  if (b.numel() == 1) return true;
  auto first = std::find_if(bs.begin(), bs.end(), [](int64_t v) { return v != 1; });
  const auto n = static_cast<std::size_t>(bs.end() - first);
  return n <= as.size() && std::equal(first, bs.end(), as.end() - n);
}

// Returns true when the op must run on f32 casts (promoted()): an operand is bf16 and the device's
// kernels cannot read it in place (the CPU).
bool check_operands(const char* op, const Tensor& a, const Tensor& b) {
  check_float(op, a, "a");
  check_float(op, b, "b");
  check_same_device(op, a, "a", b, "b");
  return (a.dtype() != DType::f32 || b.dtype() != DType::f32) && a.device().type != DeviceType::cuda;
}

// The result's dtype, as promoted() gives it: bf16 when both operands are, f32 otherwise.
DType result_dtype(const Tensor& a, const Tensor& b) {
  return a.dtype() == DType::bf16 && b.dtype() == DType::bf16 ? DType::bf16 : DType::f32;
}

// An optional saved operand as the typed kernels take it (null and f32 when absent).
const void* ptr_or_null(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
DType dtype_or_f32(const Tensor& t) { return t.defined() ? t.dtype() : DType::f32; }

// A bf16 operand (mixed precision) is widened by a recorded cast and the op computed in f32; the
// result is f32 (a residual add keeps the stream f32) unless both operands are bf16.
Tensor promoted(Tensor (*op)(const Tensor&, const Tensor&), const Tensor& a, const Tensor& b) {
  const Tensor out = op(cast(a, DType::f32), cast(b, DType::f32));
  return a.dtype() == DType::bf16 && b.dtype() == DType::bf16 ? cast(out, DType::bf16) : out;
}

enum class Kind { add, sub, mul };

Tensor binary_forward(const char* op, Kind kind, const Tensor& a_in, const Tensor& b_in, int64_t nb) {
  const Tensor a = a_in.contiguous_copy(), b = b_in.contiguous_copy();
  Tensor out = Tensor::empty(a.shape(), result_dtype(a, b), a.device());
  const int64_t n = a.numel();
  if (n == 0) return out;
  switch (a.device().type) {
    case DeviceType::cpu:
      if (kind == Kind::add) cpu::add_forward(out.data<float>(), a.data<float>(), b.data<float>(), n, nb);
      if (kind == Kind::sub) cpu::sub_forward(out.data<float>(), a.data<float>(), b.data<float>(), n, nb);
      if (kind == Kind::mul) cpu::mul_forward(out.data<float>(), a.data<float>(), b.data<float>(), n, nb);
      break;
    case DeviceType::cuda: {
      const kernels::BinaryOp op = kind == Kind::add   ? kernels::BinaryOp::add
                                   : kind == Kind::sub ? kernels::BinaryOp::sub
                                                       : kernels::BinaryOp::mul;
      cuda::binary_forward_typed(a.device(), op, out.raw_data(), out.dtype(), a.raw_data(), a.dtype(), b.raw_data(),
                                 b.dtype(), n, nb);
      break;
    }
  }
  return out;
}

// Sums g (shape of a) over the broadcast leading dims into b's shape, times `sign`.
Tensor reduce_to(const char* op, const Tensor& g, const Shape& b_shape, int64_t nb, float sign) {
  const int64_t n = g.numel();
  // Equal sizes need not mean equal shapes: b may be (1, T, C) against a's (T, C).
  if (nb == n && sign == 1.f) return g.shape() == b_shape ? g : reshape(g, b_shape);
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
  const int64_t nb = b.numel();
  Tensor out = binary_forward(op, kind, a, b, nb);
  const float sign = kind == Kind::sub ? -1.f : 1.f;
  const bool need_b = b.requires_grad();
  return record(out, op, {a, b}, [op, nb, sign, need_b, b_shape = b.shape()](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    return std::vector<Tensor>{g, need_b ? reduce_to(op, g, b_shape, nb, sign) : Tensor()};
  });
}

// The strided path: any pair of broadcastable shapes, strided inputs read in place.
Tensor general_binary(const char* op, kernels::BinaryOp kind, const Tensor& a, const Tensor& b) {
  const Shape out_shape = broadcast_shape(op, {&a.shape(), &b.shape()});
  const kernels::BroadcastLayout layout = broadcast_layout(out_shape, {&a, &b});
  Tensor out = Tensor::empty(out_shape, result_dtype(a, b), a.device());
  if (out.numel() > 0) {
    switch (a.device().type) {
      case DeviceType::cpu: cpu::broadcast_binary(kind, out.data<float>(), a.data<float>(), b.data<float>(), layout); break;
      case DeviceType::cuda:
        cuda::broadcast_binary_typed(a.device(), kind, out.raw_data(), out.dtype(), a.raw_data(), a.dtype(),
                                     b.raw_data(), b.dtype(), layout);
        break;
    }
  }
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  return record(out, op, {a, b}, [=, a = a.detach(), b = b.detach()](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    Tensor ga = need_a ? Tensor::empty(out_shape, DType::f32, g.device()) : Tensor();
    Tensor gb = need_b ? Tensor::empty(out_shape, DType::f32, g.device()) : Tensor();
    if (g.numel() > 0) {
      float* pa = need_a ? ga.data<float>() : nullptr;
      float* pb = need_b ? gb.data<float>() : nullptr;
      switch (g.device().type) {
        case DeviceType::cpu: cpu::broadcast_binary_backward(kind, pa, pb, g.data<float>(), a.data<float>(), b.data<float>(), layout); break;
        case DeviceType::cuda:
          cuda::broadcast_binary_backward_typed(g.device(), kind, pa, pb, g.data<float>(), a.raw_data(), a.dtype(),
                                                b.raw_data(), b.dtype(), layout);
          break;
      }
    }
    return std::vector<Tensor>{need_a ? sum_to_shape(ga, a.shape()) : Tensor(),
                               need_b ? sum_to_shape(gb, b.shape()) : Tensor()};
  });
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  if (check_operands("add", a, b)) return promoted(add, a, b);
  if (!periodic(a, b)) return general_binary("add", kernels::BinaryOp::add, a, b);
  return add_or_sub("add", Kind::add, a, b);
}

Tensor sub(const Tensor& a, const Tensor& b) {
  if (check_operands("sub", a, b)) return promoted(sub, a, b);
  if (!periodic(a, b)) return general_binary("sub", kernels::BinaryOp::sub, a, b);
  return add_or_sub("sub", Kind::sub, a, b);
}

Tensor div(const Tensor& a, const Tensor& b) {
  if (check_operands("div", a, b)) return promoted(div, a, b);
  return general_binary("div", kernels::BinaryOp::div, a, b);
}

Tensor mul(const Tensor& a, const Tensor& b) {
  if (check_operands("mul", a, b)) return promoted(mul, a, b);
  if (!periodic(a, b)) return general_binary("mul", kernels::BinaryOp::mul, a, b);
  const int64_t nb = b.numel();
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
        cuda::mul_backward_typed(g.device(), need_a ? da.data<float>() : nullptr, need_b ? db.data<float>() : nullptr,
                                 g.data<float>(), ptr_or_null(a_saved), dtype_or_f32(a_saved), ptr_or_null(b_saved),
                                 dtype_or_f32(b_saved), n, nb);
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
