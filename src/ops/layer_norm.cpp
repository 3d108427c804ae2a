// Layer normalisation over the last dim of x (..., C), weight and optional bias (C). The forward
// saves mean and rstd per row (N) so the backward needs no second pass over the statistics.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

Tensor layer_norm(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, float eps) {
  check_f32("layer_norm", x_in, "x");
  check_f32("layer_norm", w_in, "weight");
  check_same_device("layer_norm", x_in, "x", w_in, "weight");
  LMF_CHECK(x_in.dim() >= 1, "layer_norm: x must have at least one dim, got ", shape_str(x_in.shape()));
  const int64_t c = x_in.size(-1), n = c ? x_in.numel() / c : 0;
  LMF_CHECK(w_in.shape() == Shape{c}, "layer_norm: weight of shape ", shape_str(w_in.shape()),
            " for x ", shape_str(x_in.shape()), " (expected (", c, "))");
  const bool has_bias = b_in.defined();
  if (has_bias) {
    check_f32("layer_norm", b_in, "bias");
    check_same_device("layer_norm", x_in, "x", b_in, "bias");
    LMF_CHECK(b_in.shape() == Shape{c}, "layer_norm: bias of shape ", shape_str(b_in.shape()),
              " for x ", shape_str(x_in.shape()), " (expected (", c, "))");
  }
  LMF_CHECK(eps >= 0.f, "layer_norm: eps must be non-negative, got ", eps);
  const Tensor x = x_in.contiguous_copy(), w = w_in.contiguous_copy();
  const Tensor b = has_bias ? b_in.contiguous_copy() : Tensor();
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
  const bool need_x = x_in.requires_grad(), need_w = w_in.requires_grad();
  const bool need_b = has_bias && b_in.requires_grad();
  return record(out, "layer_norm", {x_in, w_in, b_in},
                [x = x.detach(), w = w.detach(), mean, rstd, n, c, need_x, need_w, need_b](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // (N, C)
                  Tensor dx = need_x ? Tensor::empty(x.shape(), DType::f32, g.device()) : Tensor();
                  Tensor dw = need_w ? Tensor::empty({c}, DType::f32, g.device()) : Tensor();
                  Tensor db = need_b ? Tensor::empty({c}, DType::f32, g.device()) : Tensor();
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

}  // namespace lmf
