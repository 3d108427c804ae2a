// LayerNorm over the last dimension with a learned gain (ones) and optional bias (zeros), eps 1e-5
// as in GPT-2. The bias is optional because nanoGPT-style configs can drop all biases.
#pragma once
#include <cstdint>

#include "lmforge/nn/module.h"

namespace lmf::nn {

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t features, bool bias = true, float eps = 1e-5f);

  /// x (..., C) -> (..., C).
  Tensor forward(const Tensor& x) const;

  const Tensor& weight() const { return weight_; }  ///< (C)
  const Tensor& bias() const { return bias_; }      ///< (C), undefined without bias
  float eps() const { return eps_; }

 private:
  float eps_;
  Tensor weight_;
  Tensor bias_;
};

}  // namespace lmf::nn
