// Layer normalisation over the last dim of x (..., C), weight and optional bias (C). The forward
// saves mean and rstd per row (N) so the backward needs no second pass over the statistics.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

namespace {

// Checks x (..., C), weight (C) and bias (C, optional); returns C.
int64_t check_layer_norm(const char* op, const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, float eps) {
  check_float(op, x_in, "x");
  check_f32(op, w_in, "weight");
  check_same_device(op, x_in, "x", w_in, "weight");
  LMF_CHECK(x_in.dim() >= 1, op, ": x must have at least one dim, got ", shape_str(x_in.shape()));
  const int64_t c = x_in.size(-1);
  LMF_CHECK(w_in.shape() == Shape{c}, op, ": weight of shape ", shape_str(w_in.shape()), " for x ",
            shape_str(x_in.shape()), " (expected (", c, "))");
  if (b_in.defined()) {
    check_f32(op, b_in, "bias");
    check_same_device(op, x_in, "x", b_in, "bias");
    LMF_CHECK(b_in.shape() == Shape{c}, op, ": bias of shape ", shape_str(b_in.shape()), " for x ",
              shape_str(x_in.shape()), " (expected (", c, "))");
  }
  LMF_CHECK(eps >= 0.f, op, ": eps must be non-negative, got ", eps);
  return c;
}

// Records out = layer_norm(x_in) given the forward's results: x the contiguous input (x_in or its
// copy; bf16 under mixed precision, widened again in the backward), w the contiguous weight, mean
// and rstd per row.
Tensor record_layer_norm(Tensor out, const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, const Tensor& x_saved,
                         const Tensor& w, const Tensor& mean, const Tensor& rstd) {
  const int64_t c = x_saved.size(-1), n = c ? x_saved.numel() / c : 0;
  const bool need_x = x_in.requires_grad(), need_w = w_in.requires_grad();
  const bool need_b = b_in.defined() && b_in.requires_grad();
  return record(out, "layer_norm", {x_in, w_in, b_in},
                [x_saved = x_saved.detach(), w = w.detach(), mean, rstd, n, c, need_x, need_w, need_b](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // (N, C)
                  Tensor dx = need_x ? Tensor::empty(x_saved.shape(), DType::f32, g.device()) : Tensor();
                  Tensor dw = need_w ? Tensor::empty({c}, DType::f32, g.device()) : Tensor();
                  Tensor db = need_b ? Tensor::empty({c}, DType::f32, g.device()) : Tensor();
                  if (g.device().is_cuda()) {  // reads a bf16 x in place
                    cuda::layer_norm_backward_typed(g.device(), need_x ? dx.data<float>() : nullptr,
                                                    need_w ? dw.data<float>() : nullptr,
                                                    need_b ? db.data<float>() : nullptr, g.data<float>(),
                                                    x_saved.raw_data(), x_saved.dtype(), w.data<float>(),
                                                    mean.data<float>(), rstd.data<float>(), n, c);
                    return std::vector<Tensor>{dx, dw, db};
                  }
                  const Tensor x = f32_contiguous(x_saved);
                  switch (g.device().type) {
                    case DeviceType::cpu:
                      cpu::layer_norm_backward(need_x ? dx.data<float>() : nullptr, need_w ? dw.data<float>() : nullptr,
                                               need_b ? db.data<float>() : nullptr, g.data<float>(), x.data<float>(),
                                               w.data<float>(), mean.data<float>(), rstd.data<float>(), n, c);
                      break;
                    case DeviceType::cuda:
                      cuda::layer_norm_backward(g.device(), need_x ? dx.data<float>() : nullptr,
                                                need_w ? dw.data<float>() : nullptr, need_b ? db.data<float>() : nullptr,
                                                g.data<float>(), x.data<float>(), w.data<float>(), mean.data<float>(),
                                                rstd.data<float>(), n, c);
                      break;
                  }
                  return std::vector<Tensor>{dx, dw, db};
                });
}

}  // namespace

Tensor layer_norm(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, float eps) {
  const int64_t c = check_layer_norm("layer_norm", x_in, w_in, b_in, eps), n = c ? x_in.numel() / c : 0;
  const bool has_bias = b_in.defined();
  const Tensor x_saved = x_in.contiguous_copy(), w = w_in.contiguous_copy();
  const Tensor b = has_bias ? b_in.contiguous_copy() : Tensor();
  if (x_saved.device().is_cuda()) {  // one kernel reads x and writes out in their own dtypes
    const Device dev = x_saved.device();
    Tensor out = Tensor::empty(x_saved.shape(), activation_dtype(x_in), dev);
    Tensor mean = Tensor::empty({n}, DType::f32, dev), rstd = Tensor::empty({n}, DType::f32, dev);
    cuda::add_layer_norm_forward(dev, nullptr, DType::f32, out.raw_data(), out.dtype(), mean.data<float>(),
                                 rstd.data<float>(), x_saved.raw_data(), x_saved.dtype(), nullptr, DType::f32,
                                 w.data<float>(), has_bias ? b.data<float>() : nullptr, n, c, eps);
    return record_layer_norm(out, x_in, w_in, b_in, x_saved, w, mean, rstd);
  }
  const Tensor x = f32_contiguous(x_saved);  // x_saved itself when f32
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  Tensor mean = Tensor::empty({n}, DType::f32, x.device()), rstd = Tensor::empty({n}, DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu:
      cpu::layer_norm_forward(out.data<float>(), mean.data<float>(), rstd.data<float>(), x.data<float>(),
                              w.data<float>(), has_bias ? b.data<float>() : nullptr, n, c, eps);
      break;
    case DeviceType::cuda:
      cuda::layer_norm_forward(x.device(), out.data<float>(), mean.data<float>(), rstd.data<float>(), x.data<float>(),
                               w.data<float>(), has_bias ? b.data<float>() : nullptr, n, c, eps);
      break;
  }
  out = stored_as(out, activation_dtype(x_in));
  return record_layer_norm(out, x_in, w_in, b_in, x_saved, w, mean, rstd);
}

std::pair<Tensor, Tensor> add_layer_norm(const Tensor& x_in, const Tensor& y_in, const Tensor& w_in,
                                         const Tensor& b_in, float eps) {
  check_float("add_layer_norm", y_in, "y");
  check_same_device("add_layer_norm", x_in, "x", y_in, "y");
  LMF_CHECK(x_in.defined() && x_in.shape() == y_in.shape(), "add_layer_norm: x ", shape_str(x_in.shape()),
            " and y ", shape_str(y_in.shape()), " must have the same shape");
  const int64_t c = check_layer_norm("add_layer_norm", x_in, w_in, b_in, eps), n = c ? x_in.numel() / c : 0;
  const bool both_bf16 = x_in.dtype() == DType::bf16 && y_in.dtype() == DType::bf16;
  // Mixed precision: the residual stream x is f32 and the branch y bf16; the sum stays f32.
  const DType out_dtype = y_in.dtype() == DType::bf16 || x_in.dtype() == DType::bf16 ? DType::bf16
                                                                                     : activation_dtype(x_in);
  if (x_in.device().is_cuda()) {
    // One kernel: the sum (bf16 only when both inputs are, rounded before the statistics as add
    // would round it) and the norm, each written in its dtype.
    const Device dev = x_in.device();
    const Tensor xc = x_in.contiguous_copy(), yc = y_in.contiguous_copy(), w = w_in.contiguous_copy();
    const Tensor b = b_in.defined() ? b_in.contiguous_copy() : Tensor();
    Tensor sum = Tensor::empty(xc.shape(), both_bf16 ? DType::bf16 : DType::f32, dev);
    Tensor out = Tensor::empty(xc.shape(), out_dtype, dev);
    Tensor mean = Tensor::empty({n}, DType::f32, dev), rstd = Tensor::empty({n}, DType::f32, dev);
    cuda::add_layer_norm_forward(dev, sum.raw_data(), sum.dtype(), out.raw_data(), out.dtype(), mean.data<float>(),
                                 rstd.data<float>(), xc.raw_data(), xc.dtype(), yc.raw_data(), yc.dtype(),
                                 w.data<float>(), b.defined() ? b.data<float>() : nullptr, n, c, eps);
    sum = record(sum, "add", {x_in, y_in}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
    return {sum, record_layer_norm(out, sum, w_in, b_in, sum, w, mean, rstd)};
  }
  // Two bf16 inputs on the CPU: the two ops (their sum is bf16).
  if (both_bf16) {
    Tensor sum = add(x_in, y_in);
    return {sum, layer_norm(sum, w_in, b_in, eps)};
  }
  const Tensor x = f32_contiguous(x_in), y = f32_contiguous(y_in), w = w_in.contiguous_copy();
  const Tensor b = b_in.defined() ? b_in.contiguous_copy() : Tensor();
  Tensor sum = Tensor::empty(x.shape(), DType::f32, x.device());
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  Tensor mean = Tensor::empty({n}, DType::f32, x.device()), rstd = Tensor::empty({n}, DType::f32, x.device());
  cpu::add_layer_norm_forward(sum.data<float>(), out.data<float>(), mean.data<float>(), rstd.data<float>(),
                              x.data<float>(), y.data<float>(), w.data<float>(),
                              b.defined() ? b.data<float>() : nullptr, n, c, eps);
  // Two nodes, as if add and layer_norm had run: the sum passes its gradient to both inputs.
  sum = record(sum, "add", {x_in, y_in}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  return {sum, record_layer_norm(stored_as(out, out_dtype), sum, w_in, b_in, sum, w, mean, rstd)};
}

}  // namespace lmf
