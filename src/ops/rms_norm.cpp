// RMS normalisation over the last dim of x (..., C) with a weight (C), as Hugging Face's
// LlamaRMSNorm computes it in f32. The forward saves rstd per row (N), all the backward needs
// besides x and the weight.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

namespace {

// Checks x (..., C) and weight (C); returns C.
int64_t check_rms_norm(const char* op, const Tensor& x, const Tensor& w, float eps) {
  check_float(op, x, "x");
  check_f32(op, w, "weight");
  check_same_device(op, x, "x", w, "weight");
  LMF_CHECK(x.dim() >= 1, op, ": x must have at least one dim, got ", shape_str(x.shape()));
  const int64_t c = x.size(-1);
  LMF_CHECK(w.shape() == Shape{c}, op, ": weight of shape ", shape_str(w.shape()), " for x ", shape_str(x.shape()),
            " (expected (", c, "))");
  LMF_CHECK(eps >= 0.f, op, ": eps must be non-negative, got ", eps);
  return c;
}

// Records out = rms_norm(x_in) given the contiguous input x, weight w and the saved rstd.
// x_saved may be bf16 (mixed precision): the backward widens it again.
Tensor record_rms_norm(Tensor out, const Tensor& x_in, const Tensor& w_in, const Tensor& x_saved, const Tensor& w,
                       const Tensor& rstd) {
  const int64_t c = x_saved.size(-1), n = c ? x_saved.numel() / c : 0;
  const bool need_x = x_in.requires_grad(), need_w = w_in.requires_grad();
  return record(out, "rms_norm", {x_in, w_in},
                [x_saved = x_saved.detach(), w = w.detach(), rstd, n, c, need_x, need_w](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // (N, C)
                  Tensor dx = need_x ? Tensor::empty(x_saved.shape(), DType::f32, g.device()) : Tensor();
                  Tensor dw = need_w ? Tensor::empty({c}, DType::f32, g.device()) : Tensor();
                  float* dxp = need_x ? dx.data<float>() : nullptr;
                  float* dwp = need_w ? dw.data<float>() : nullptr;
                  if (g.device().is_cuda()) {  // reads a bf16 x in place
                    cuda::rms_norm_backward_typed(g.device(), dxp, dwp, g.data<float>(), x_saved.raw_data(),
                                                  x_saved.dtype(), w.data<float>(), rstd.data<float>(), n, c);
                    return std::vector<Tensor>{dx, dw};
                  }
                  const Tensor x = f32_contiguous(x_saved);
                  switch (g.device().type) {
                    case DeviceType::cpu:
                      cpu::rms_norm_backward(dxp, dwp, g.data<float>(), x.data<float>(), w.data<float>(),
                                             rstd.data<float>(), n, c);
                      break;
                    case DeviceType::cuda:
                      cuda::rms_norm_backward(g.device(), dxp, dwp, g.data<float>(), x.data<float>(),
                                              w.data<float>(), rstd.data<float>(), n, c);
                      break;
                  }
                  return std::vector<Tensor>{dx, dw};
                });
}

}  // namespace

Tensor rms_norm(const Tensor& x_in, const Tensor& w_in, float eps) {
  const int64_t c = check_rms_norm("rms_norm", x_in, w_in, eps), n = c ? x_in.numel() / c : 0;
  const Tensor x_saved = x_in.contiguous_copy(), w = w_in.contiguous_copy();
  if (x_saved.device().is_cuda()) {  // one kernel reads x and writes out in their own dtypes
    const Device dev = x_saved.device();
    Tensor out = Tensor::empty(x_saved.shape(), activation_dtype(x_in), dev);
    Tensor rstd = Tensor::empty({n}, DType::f32, dev);
    cuda::add_rms_norm_forward(dev, nullptr, DType::f32, out.raw_data(), out.dtype(), rstd.data<float>(),
                               x_saved.raw_data(), x_saved.dtype(), nullptr, DType::f32, w.data<float>(), n, c, eps);
    return record_rms_norm(out, x_in, w_in, x_saved, w, rstd);
  }
  const Tensor x = f32_contiguous(x_saved);  // x_saved itself when f32
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  Tensor rstd = Tensor::empty({n}, DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu:
      cpu::rms_norm_forward(out.data<float>(), rstd.data<float>(), x.data<float>(), w.data<float>(), n, c, eps);
      break;
    case DeviceType::cuda:
      cuda::rms_norm_forward(x.device(), out.data<float>(), rstd.data<float>(), x.data<float>(), w.data<float>(),
                             n, c, eps);
      break;
  }
  return record_rms_norm(stored_as(out, activation_dtype(x_in)), x_in, w_in, x_saved, w, rstd);
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x_in, const Tensor& y_in, const Tensor& w_in, float eps) {
  check_float("add_rms_norm", y_in, "y");
  check_float("add_rms_norm", x_in, "x");
  check_same_device("add_rms_norm", x_in, "x", y_in, "y");
  LMF_CHECK(x_in.shape() == y_in.shape(), "add_rms_norm: x ", shape_str(x_in.shape()), " and y ",
            shape_str(y_in.shape()), " must have the same shape");
  const int64_t c = check_rms_norm("add_rms_norm", x_in, w_in, eps), n = c ? x_in.numel() / c : 0;
  const bool both_bf16 = x_in.dtype() == DType::bf16 && y_in.dtype() == DType::bf16;
  // Mixed precision: the residual stream x is f32 and the branch y bf16; the sum stays f32.
  const DType out_dtype = y_in.dtype() == DType::bf16 || x_in.dtype() == DType::bf16 ? DType::bf16
                                                                                     : activation_dtype(x_in);
  if (x_in.device().is_cuda()) {
    // One kernel: the sum (bf16 only when both inputs are, rounded before the statistics as add
    // would round it) and the norm, each written in its dtype.
    const Device dev = x_in.device();
    const Tensor xc = x_in.contiguous_copy(), yc = y_in.contiguous_copy(), w = w_in.contiguous_copy();
    Tensor sum = Tensor::empty(xc.shape(), both_bf16 ? DType::bf16 : DType::f32, dev);
    Tensor out = Tensor::empty(xc.shape(), out_dtype, dev);
    Tensor rstd = Tensor::empty({n}, DType::f32, dev);
    cuda::add_rms_norm_forward(dev, sum.raw_data(), sum.dtype(), out.raw_data(), out.dtype(), rstd.data<float>(),
                               xc.raw_data(), xc.dtype(), yc.raw_data(), yc.dtype(), w.data<float>(), n, c, eps);
    sum = record(sum, "add", {x_in, y_in}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
    return {sum, record_rms_norm(out, sum, w_in, sum, w, rstd)};
  }
  // Two bf16 inputs on the CPU: the two ops (their sum is bf16).
  if (both_bf16) {
    Tensor sum = add(x_in, y_in);
    return {sum, rms_norm(sum, w_in, eps)};
  }
  const Tensor x = f32_contiguous(x_in), y = f32_contiguous(y_in), w = w_in.contiguous_copy();
  Tensor sum = Tensor::empty(x.shape(), DType::f32, x.device());
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  Tensor rstd = Tensor::empty({n}, DType::f32, x.device());
  cpu::add_rms_norm_forward(sum.data<float>(), out.data<float>(), rstd.data<float>(), x.data<float>(),
                            y.data<float>(), w.data<float>(), n, c, eps);
  // Two nodes, as if add and rms_norm had run: the sum passes its gradient to both inputs.
  sum = record(sum, "add", {x_in, y_in}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  return {sum, record_rms_norm(stored_as(out, out_dtype), sum, w_in, sum, w, rstd)};
}

}  // namespace lmf
