// The GPT-2 model: token + learned position embeddings, pre-LayerNorm transformer blocks, a final
// LayerNorm and a language-model head tied to the token embedding. Parameter names are Hugging
// Face GPT-2's without the "transformer." prefix, so checkpoints map one-to-one by name.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/core/rng.h"
#include "lmforge/nn/causal_lm.h"
#include "lmforge/nn/embedding.h"
#include "lmforge/nn/layer_norm.h"
#include "lmforge/nn/linear.h"
#include "lmforge/nn/module.h"

namespace lmf::nn {

struct GPTConfig {
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;
  int64_t block_size = 1024;   ///< longest sequence (rows of wpe)
  int64_t vocab_size = 50257;
  float dropout = 0.f;         ///< on embeddings, attention output and MLP output
  bool bias = true;            ///< biases in Linear and LayerNorm layers
  /// Throws lmf::Error naming the first invalid field (non-positive sizes, n_embd % n_head != 0,
  /// dropout outside [0, 1)).
  void validate() const;
};

/// config.json text for `config` in Hugging Face GPT-2 form (model_type "gpt2", GPT2LMHeadModel,
/// n_layer/n_head/n_embd/n_positions/n_ctx/vocab_size, layer_norm_epsilon 1e-5, activation_function
/// "gelu_new", resid/embd/attn_pdrop = dropout, tie_word_embeddings true). A model without biases
/// adds "bias": false (Hugging Face ignores the key).
std::string gpt2_config_json(const GPTConfig& config);

/// Multi-head causal self-attention. The attention op has no dropout of its own, so dropout is
/// applied to the projected output only (nanoGPT's resid_dropout).
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(const GPTConfig& config, Generator& init_gen, Generator& dropout_gen);
  /// x (B, T, C) -> (B, T, C). With a cache, x holds the positions after the cache->length()
  /// cached ones: its keys and values are appended to layer `layer` of the cache and its queries
  /// attend to every cached position as well. Gradients do not flow through the cache.
  Tensor forward(const Tensor& x, KVCache* cache = nullptr, int64_t layer = 0) const;

  const Linear& c_attn() const { return c_attn_; }  ///< C -> 3C, outputs ordered q, k, v
  const Linear& c_proj() const { return c_proj_; }  ///< C -> C
  int64_t n_head() const { return n_head_; }
  int64_t n_embd() const { return n_embd_; }

 private:
  int64_t n_head_;
  int64_t n_embd_;
  float dropout_;
  Generator* dropout_gen_;
  Linear c_attn_;
  Linear c_proj_;
};

/// Feed-forward: c_fc C -> 4C, GELU (tanh approximation), c_proj 4C -> C, dropout.
class MLP : public Module {
 public:
  MLP(const GPTConfig& config, Generator& init_gen, Generator& dropout_gen);
  /// x (B, T, C) -> (B, T, C).
  Tensor forward(const Tensor& x) const;

  const Linear& c_fc() const { return c_fc_; }
  const Linear& c_proj() const { return c_proj_; }

 private:
  float dropout_;
  Generator* dropout_gen_;
  Linear c_fc_;
  Linear c_proj_;
};

/// Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
class Block : public Module {
 public:
  Block(const GPTConfig& config, Generator& init_gen, Generator& dropout_gen);
  /// x (B, T, C) -> (B, T, C); the cache as in CausalSelfAttention::forward.
  Tensor forward(const Tensor& x, KVCache* cache = nullptr, int64_t layer = 0) const;

  const LayerNorm& ln_1() const { return ln_1_; }
  const CausalSelfAttention& attn() const { return attn_; }
  const LayerNorm& ln_2() const { return ln_2_; }
  const MLP& mlp() const { return mlp_; }

 private:
  LayerNorm ln_1_;
  CausalSelfAttention attn_;
  LayerNorm ln_2_;
  MLP mlp_;
};

/// GPT-2. Parameters (registration order): wte.weight (V, C), wpe.weight (block_size, C),
/// h.{i}.ln_1.{weight,bias}, h.{i}.attn.c_attn.{weight,bias}, h.{i}.attn.c_proj.{weight,bias},
/// h.{i}.ln_2.{weight,bias}, h.{i}.mlp.c_fc.{weight,bias}, h.{i}.mlp.c_proj.{weight,bias},
/// ln_f.{weight,bias}. Linear weights are (OUT, IN). There is no lm_head.weight: the head reads
/// wte.weight. Initialisation (GPT-2 / nanoGPT): Linear and Embedding weights N(0, 0.02), the
/// residual projections attn.c_proj.weight and mlp.c_proj.weight N(0, 0.02/sqrt(2·n_layer)),
/// biases 0, LayerNorm gains 1. After construction the parameters live in CPU slabs.
class GPT : public CausalLM {
 public:
  using Output = LMOutput;

  /// Builds and initialises the model from a generator seeded with `seed`; dropout draws use a
  /// separate generator (dropout_generator()) derived from the same seed.
  explicit GPT(const GPTConfig& config, uint64_t seed = 0);

  /// ids (B, T) of i32 or u16 -> logits (B, T, V). T must be <= block_size and every id in
  /// [0, vocab_size); violations are an lmf::Error naming the offending value.
  Tensor forward(const Tensor& ids) const { return forward(ids, nullptr); }
  Tensor forward(const Tensor& ids, KVCache* cache) const override;
  /// Logits and the mean cross-entropy against targets (B, T) i32; targets equal to
  /// ignore_index do not count.
  Output forward(const Tensor& ids, const Tensor& targets, int32_t ignore_index = -1) const;
  /// The loss without logits. On a GPU the head and the cross-entropy run fused in chunks of
  /// rows (lm_head_cross_entropy, about 256 MiB of f32 logits per chunk), so no (B, T, V) tensor
  /// exists; on the CPU it is the unfused forward_with_loss (same cost, slab-accumulated grads).
  Tensor forward_loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index = -1) const override;

  const GPTConfig& config() const { return config_; }
  Generator& dropout_generator() const override { return *dropout_gen_; }

  // --- CausalLM ------------------------------------------------------------------------------
  KVCache make_cache(int64_t batch = 1, int64_t capacity = 0) const override;
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t context_size() const override { return config_.block_size; }
  double flops_per_token(int64_t seq_len) const override;
  std::string arch() const override { return "gpt2"; }
  std::string hf_config_json() const override { return gpt2_config_json(config_); }
  CheckpointName checkpoint_name(const std::string& param_name) const override;
  std::vector<std::string> lora_target_names() const override;
  int64_t num_layers() const override { return num_blocks(); }
  std::string layer_prefix(int64_t i) const override { return "h." + std::to_string(i); }

  const Embedding& wte() const { return wte_; }
  const Embedding& wpe() const { return wpe_; }
  const Block& block(int64_t i) const { return *h_.at(static_cast<std::size_t>(i)); }
  int64_t num_blocks() const { return static_cast<int64_t>(h_.size()); }
  const LayerNorm& ln_f() const { return ln_f_; }
  /// Parameter count; without embeddings excludes wpe (wte is the head too, so it counts), as
  /// nanoGPT reports.
  int64_t num_parameters(bool include_embeddings = true) const;

 private:
  /// ids (B, T) -> final hidden states (B, T, C), after ln_f; with a cache, at positions
  /// [cache->length(), cache->length() + T).
  Tensor hidden_states(const Tensor& ids, KVCache* cache) const;

  GPTConfig config_;
  std::unique_ptr<Generator> init_gen_;     // drives initialisation; released after construction
  std::unique_ptr<Generator> dropout_gen_;  // heap-held so members can keep a stable pointer
  Embedding wte_;
  Embedding wpe_;
  std::vector<std::unique_ptr<Block>> h_;
  LayerNorm ln_f_;
};

}  // namespace lmf::nn
