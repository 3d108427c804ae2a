// RMSNorm over the last dimension with a learned gain (ones), as Hugging Face's LlamaRMSNorm (also
// Qwen2/3 and Mistral): x * rsqrt(mean(x²) + eps) * weight, computed in f32. No bias, no mean.
#pragma once
#include <cstdint>
#include <utility>

#include "lmforge/nn/module.h"

namespace lmf::nn {

class RMSNorm : public Module {
 public:
  /// weight (C) = ones; eps as the config's rms_norm_eps (Llama 3: 1e-5, Qwen: 1e-6).
  explicit RMSNorm(int64_t features, float eps = 1e-6f);

  /// x (..., C) -> (..., C).
  Tensor forward(const Tensor& x) const;
  /// {x + residual, forward(x + residual)} in one pass over each row (a decoder's residual add and
  /// the norm after it); the same values and gradients as the two steps.
  std::pair<Tensor, Tensor> forward_add(const Tensor& x, const Tensor& residual) const;

  const Tensor& weight() const { return weight_; }  ///< (C)
  float eps() const { return eps_; }

 private:
  float eps_;
  Tensor weight_;
};

}  // namespace lmf::nn
