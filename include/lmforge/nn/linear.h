// Linear layer y = x·Wᵀ + b with the weight stored (OUT, IN), as in PyTorch. Hugging Face GPT-2's
// Conv1D stores (IN, OUT); checkpoint I/O transposes at the boundary so the model has one layout.
#pragma once
#include <cstdint>
#include <memory>

#include "lmforge/core/rng.h"
#include "lmforge/nn/module.h"

namespace lmf::nn {

struct LoraAdapter;  // nn/lora.h

class Linear : public Module {
 public:
  /// weight ~ N(0, init_std) drawn from `gen`; bias zero (absent when !bias).
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen,
         float init_std = 0.02f);
  ~Linear() override;

  /// x (..., IN) -> (..., OUT), plus the LoRA adapter's term when one is attached.
  Tensor forward(const Tensor& x) const;
  /// gelu(forward(x)); without a LoRA adapter the GELU runs in the matrix product's epilogue.
  Tensor forward_gelu(const Tensor& x) const;

  const Tensor& weight() const { return weight_; }  ///< (OUT, IN)
  const Tensor& bias() const { return bias_; }      ///< (OUT), undefined without bias
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  /// Low-rank adapter (nn/lora.h; use add_lora / merge_lora on a GPT). attach_lora registers A and
  /// B as the parameters "lora_A" and "lora_B"; detach_lora unregisters and returns them. Either
  /// leaves the owning model's slabs stale until it calls flatten_parameters again.
  void attach_lora(std::unique_ptr<LoraAdapter> adapter);
  std::unique_ptr<LoraAdapter> detach_lora();
  const LoraAdapter* lora() const { return lora_.get(); }

 private:
  int64_t in_features_;
  int64_t out_features_;
  Tensor weight_;
  Tensor bias_;
  std::unique_ptr<LoraAdapter> lora_;
};

}  // namespace lmf::nn
