// RMSNorm: a thin stateful wrapper over the fused rms_norm / add_rms_norm ops.
#include "lmforge/nn/rms_norm.h"

#include "lmforge/ops.h"

namespace lmf::nn {

RMSNorm::RMSNorm(int64_t features, float eps) : eps_(eps) {
  LMF_CHECK(features > 0, "RMSNorm(", features, "): size must be positive");
  LMF_CHECK(eps >= 0.f, "RMSNorm: eps must be non-negative, got ", eps);
  weight_ = register_parameter("weight", Tensor::ones({features}));
}

Tensor RMSNorm::forward(const Tensor& x) const { return rms_norm(x, weight_, eps_); }

std::pair<Tensor, Tensor> RMSNorm::forward_add(const Tensor& x, const Tensor& residual) const {
  return add_rms_norm(x, residual, weight_, eps_);
}

}  // namespace lmf::nn
