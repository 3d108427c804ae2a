// LoRA: low-rank adapters on the Linear layers of any CausalLM (those its lora_target_names() name
// inside each layer), y = x·Wᵀ + b + (alpha/r)·dropout(x)·Aᵀ·Bᵀ.
// Adapters are ordinary parameters of their Linear ("h.0.attn.c_attn.lora_A"), so the slabs, AdamW,
// clipping and checkpoints treat them like any other; the base weights are frozen, never copied.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lmforge/core/rng.h"
#include "lmforge/core/tensor.h"

namespace lmf::nn {

class CausalLM;
class Linear;

/// GPT-2's layers that may carry adapters, by their name inside a block (GPT::lora_target_names(),
/// and the default targets of LoraOptions).
inline const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                 "mlp.c_proj"};
  return names;
}

struct LoraOptions {
  int64_t rank = 8;     ///< r, the inner dimension of B·A
  float alpha = 16.f;   ///< the update is scaled by alpha / rank
  float dropout = 0.f;  ///< on the adapter's input only, in training mode
  std::vector<std::string> targets = lora_target_names();  ///< subset of the model's lora_target_names()
  uint64_t seed = 0;                                       ///< draws A
  /// Throws lmf::Error naming the first invalid field (rank < 1, alpha <= 0, dropout outside
  /// [0, 1), a repeated target, no targets).
  void validate() const;
  /// validate() plus every target being one of model.lora_target_names().
  void validate(const CausalLM& model) const;
};

/// One adapter. A (r, IN) starts Kaiming-uniform in ±1/sqrt(IN) (PEFT's default), B (OUT, r)
/// starts at zero, so an adapted model computes exactly the base function until B is trained.
struct LoraAdapter {
  Tensor A;  ///< (r, IN)
  Tensor B;  ///< (OUT, r)
  int64_t rank = 0;
  float alpha = 0.f;
  float dropout = 0.f;
  Generator* dropout_gen = nullptr;  ///< the model's dropout generator
  float scale() const { return alpha / static_cast<float>(rank); }
};

/// The adapter's contribution (alpha/r)·dropout(x)·Aᵀ·Bᵀ: x (..., IN) -> (..., OUT).
Tensor lora_forward(const LoraAdapter& adapter, const Tensor& x, bool training);

/// Attaches adapters to every target Linear of every layer ("<layer_prefix(i)>.<target>" for i <
/// num_layers()), freezes every base parameter (requires_grad false: only adapters train) and
/// re-flattens the slabs on the model's device, so build optimizers afterwards. Adapter
/// parameters are named "<layer>.lora_A" / ".lora_B" and follow their layer's weight and bias.
/// Throws when the model already has adapters or a target is not one of its lora_target_names().
void add_lora(CausalLM& model, const LoraOptions& options);
/// Folds every adapter into its base weight (W += (alpha/r)·B·A), removes the adapters, marks
/// every parameter trainable again (as a freshly built model) and re-flattens the slabs. The
/// merged model computes the adapted function without dropout. Throws when there are none.
void merge_lora(CausalLM& model);
bool has_lora(const CausalLM& model);
/// The Linear called `target` (one of model.lora_target_names()) in layer `layer`; throws
/// lmf::Error naming the module path when the model has no such Linear.
const Linear& lora_target(const CausalLM& model, int64_t layer, const std::string& target);
/// The options the model's adapters were built with (targets in lora_target_names() order, seed
/// 0), or nullopt when it has none.
std::optional<LoraOptions> lora_options(const CausalLM& model);

}  // namespace lmf::nn
