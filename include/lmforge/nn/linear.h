// Linear layer y = x·Wᵀ + b with the weight stored (OUT, IN), as in PyTorch. Hugging Face GPT-2's
// Conv1D stores (IN, OUT); checkpoint I/O transposes at the boundary so the model has one layout.
#pragma once
#include <cstdint>

#include "lmforge/core/rng.h"
#include "lmforge/nn/module.h"

namespace lmf::nn {

class Linear : public Module {
 public:
  /// weight ~ N(0, init_std) drawn from `gen`; bias zero (absent when !bias).
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen,
         float init_std = 0.02f);

  /// x (..., IN) -> (..., OUT).
  Tensor forward(const Tensor& x) const;

  const Tensor& weight() const { return weight_; }  ///< (OUT, IN)
  const Tensor& bias() const { return bias_; }      ///< (OUT), undefined without bias
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

 private:
  int64_t in_features_;
  int64_t out_features_;
  Tensor weight_;
  Tensor bias_;
};

}  // namespace lmf::nn
