// CausalLM: the seam between models and everything above them. The trainer, checkpoints, eval,
// generation and LoRA take a CausalLM, so a researcher's own decoder (a subclass written from the
// public ops and modules) trains, checkpoints and generates like the built-in GPT-2.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lmforge/core/rng.h"
#include "lmforge/core/tensor.h"
#include "lmforge/nn/module.h"

namespace lmf::nn {

class KVCache;  // lmforge/nn/kv_cache.h

/// Logits and the mean cross-entropy over targets != ignore_index.
struct LMOutput {
  Tensor logits;  ///< (B, T, V)
  Tensor loss;    ///< scalar
};

/// How one parameter is stored in the model's Hugging Face checkpoint.
struct CheckpointName {
  std::string name;         ///< tensor name in model.safetensors
  bool transposed = false;  ///< stored as the transpose of the parameter (GPT-2's Conv1D weights)
};

class CausalLM : public Module {
 public:
  /// ids (B, T) of i32 or u16 -> logits (B, T, V). With a cache, ids sit at positions
  /// [cache->length(), cache->length() + T), attend to every cached position, and are appended to
  /// the cache. T + the cached length must not exceed context_size(); ids must be in
  /// [0, vocab_size()). Violations are an lmf::Error naming the value.
  virtual Tensor forward(const Tensor& ids, KVCache* cache = nullptr) const = 0;
  /// Logits and the mean cross-entropy against targets (B, T) of i32. The default is
  /// forward(ids) followed by cross_entropy; a model may override it with a fused head.
  virtual LMOutput forward_with_loss(const Tensor& ids, const Tensor& targets,
                                     int32_t ignore_index = -1) const;
  /// The mean cross-entropy alone, for callers that do not need the logits (training steps). The
  /// default is forward_with_loss(...).loss; a model may override it with a head that never holds
  /// the (B, T, V) logits (GPT on a GPU: lm_head_cross_entropy in chunks).
  virtual Tensor forward_loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index = -1) const;
  /// A cache for `batch` sequences of up to `capacity` positions (0: context_size()) on the
  /// model's device.
  virtual KVCache make_cache(int64_t batch = 1, int64_t capacity = 0) const = 0;

  /// Rows of the embedding / columns of the logits.
  virtual int64_t vocab_size() const = 0;
  /// The longest sequence the model accepts (learned positions, or the rotary range trained for).
  virtual int64_t context_size() const = 0;
  /// Training FLOPs per token for sequences of `seq_len` tokens: 6 N (N without position
  /// embeddings) + the attention's 12 L C T, as PaLM and llm.c count, for MFU.
  virtual double flops_per_token(int64_t seq_len) const = 0;
  /// The architecture name written to config.json's model_type ("gpt2", "llama", ...).
  virtual std::string arch() const = 0;
  /// config.json of the model's Hugging Face directory.
  virtual std::string hf_config_json() const = 0;
  /// How parameter `param_name` (a name of named_parameters()) is stored in a checkpoint. The
  /// default keeps the name and the layout.
  virtual CheckpointName checkpoint_name(const std::string& param_name) const;
  /// The names of the Linear submodules inside one layer that LoRA may adapt ("attn.c_attn",
  /// "mlp.down_proj", ...), in the order adapters are listed.
  virtual std::vector<std::string> lora_target_names() const = 0;
  /// Number of layers (blocks) whose Linear submodules are named "<layer_prefix(i)>.<target>".
  virtual int64_t num_layers() const = 0;
  /// The prefix of layer i's submodules ("h.3" for GPT-2, "model.layers.3" for Llama).
  virtual std::string layer_prefix(int64_t i) const = 0;
  /// The generator behind every dropout mask (checkpoints save and restore its state).
  virtual Generator& dropout_generator() const = 0;
};

}  // namespace lmf::nn
