// Llama-style decoders (Llama 2/3, Qwen2/2.5, Qwen3, Mistral, SmolLM): RMSNorm, rotary positions,
// grouped-query attention, SwiGLU MLP, tied or untied head. Parameter names are exactly Hugging
// Face's (model.layers.0.self_attn.q_proj.weight, ...), so a checkpoint maps by identity and one
// class covers the four model types, which differ only in the options of LlamaConfig.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/core/rng.h"
#include "lmforge/nn/attention.h"
#include "lmforge/nn/causal_lm.h"
#include "lmforge/nn/embedding.h"
#include "lmforge/nn/linear.h"
#include "lmforge/nn/module.h"
#include "lmforge/nn/rms_norm.h"
#include "lmforge/nn/rotary.h"
#include "lmforge/nn/swiglu_mlp.h"

namespace lmf::nn {

/// The hyperparameters of a Llama-style decoder, named after Hugging Face's config.json keys.
struct LlamaConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 256;           ///< C
  int64_t intermediate_size = 688;     ///< I, the SwiGLU width
  int64_t num_hidden_layers = 4;       ///< L
  int64_t num_attention_heads = 4;     ///< NH
  int64_t num_key_value_heads = 0;     ///< NKV dividing NH; 0 means NH (1: multi-query)
  int64_t head_dim = 0;                ///< HS; 0 means hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;  ///< the context (rotary table length)
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;            ///< none, linear or llama3
  bool tie_word_embeddings = false;    ///< lm_head reads model.embed_tokens.weight
  bool qkv_bias = false;               ///< biases on q_proj, k_proj, v_proj (Qwen2; attention_bias)
  bool o_bias = false;                 ///< bias on o_proj (attention_bias of Llama and Qwen3)
  bool qk_norm = false;                ///< per-head RMSNorm of q and k before the rotation (Qwen3)
  float initializer_range = 0.02f;     ///< N(0, initializer_range) weights, as transformers
  int64_t bos_token_id = -1;           ///< config.json's bos_token_id (-1: none); kept for the writer
  std::vector<int64_t> eos_token_ids;  ///< config.json's eos_token_id (one id or a list); generation stops at any
  /// config.json's model_type: "llama", "qwen2", "qwen3" or "mistral"; empty: the one that can
  /// express the options (qk_norm: qwen3; q/k/v biases without an o_proj bias: qwen2; else llama).
  std::string model_type;

  int64_t kv_heads() const { return num_key_value_heads > 0 ? num_key_value_heads : num_attention_heads; }
  int64_t head_size() const;
  /// The model_type written to config.json (model_type, or the one derived from the options).
  std::string hf_model_type() const;
  /// Throws lmf::Error naming the first bad key (as config.json spells it).
  void validate() const;
};

/// config.json of a LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM / MistralForCausalLM
/// (per hf_model_type()) that transformers loads; tensors are float32.
std::string llama_config_json(const LlamaConfig& config);

/// input_layernorm -> self_attn -> residual -> post_attention_layernorm -> mlp -> residual.
class LlamaDecoderLayer : public Module {
 public:
  LlamaDecoderLayer(const LlamaConfig& config, int64_t layer_index, const RotaryEmbedding& rotary,
                    Generator& gen);

  const RMSNorm& input_layernorm() const { return input_layernorm_; }
  const Attention& self_attn() const { return self_attn_; }
  const RMSNorm& post_attention_layernorm() const { return post_attention_layernorm_; }
  const SwiGLUMLP& mlp() const { return mlp_; }

 private:
  RMSNorm input_layernorm_;
  Attention self_attn_;
  RMSNorm post_attention_layernorm_;
  SwiGLUMLP mlp_;
};

/// A Llama-style causal LM. Parameters (registration order, Hugging Face's names and layouts):
/// model.embed_tokens.weight (V, C); per layer i, model.layers.{i}.input_layernorm.weight (C),
/// .self_attn.{q,k,v}_proj.weight ((NH|NKV)·HS, C) (+ .bias with qkv_bias),
/// .self_attn.o_proj.weight (C, NH·HS) (+ .bias with o_bias), .self_attn.{q,k}_norm.weight (HS)
/// with qk_norm, .post_attention_layernorm.weight (C), .mlp.{gate,up}_proj.weight (I, C),
/// .mlp.down_proj.weight (C, I); model.norm.weight (C); lm_head.weight (V, C) unless tied. The
/// rotary tables are one non-persistent buffer pair shared by every layer (model.rotary_emb).
class Llama : public CausalLM {
 public:
  /// Validates `config`, builds and initialises the model (weights N(0, initializer_range) drawn
  /// from a generator seeded with `seed`, norms 1, biases 0) on the CPU.
  explicit Llama(const LlamaConfig& config, uint64_t seed = 0);

  /// ids (B, T) -> logits (B, T, V); with a cache, positions start at cache->length() (rotary
  /// offset) and every layer appends its keys and values. A cache is for inference: the call
  /// must run under NoGradGuard when parameters need gradients.
  Tensor forward(const Tensor& ids, KVCache* cache = nullptr) const override;
  /// The training loss: on a GPU through lm_head_cross_entropy (the output head and the
  /// cross-entropy in row chunks of about 256 MiB of f32 logits, never holding (B·T, V) of them;
  /// tied or untied head alike); on the CPU the generic path, unchanged.
  Tensor forward_loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index = -1) const override;
  /// The chunked loss on any device, `chunk` rows of logits at a time (what forward_loss runs on a
  /// GPU with its own chunk size): the same loss and gradients as forward_with_loss.
  Tensor chunked_loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index, int64_t chunk) const;
  KVCache make_cache(int64_t batch = 1, int64_t capacity = 0) const override;

  const LlamaConfig& config() const { return config_; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t context_size() const override { return config_.max_position_embeddings; }
  /// 6 N (N: every parameter but the input embedding when the head is untied; a tied table is
  /// the head and counts once) + 12 L NH HS T for the attention scores and their use.
  double flops_per_token(int64_t seq_len) const override;
  std::string arch() const override { return config_.hf_model_type(); }
  std::string hf_config_json() const override { return llama_config_json(config_); }
  /// self_attn.q_proj, k_proj, v_proj, o_proj, mlp.gate_proj, up_proj, down_proj.
  std::vector<std::string> lora_target_names() const override;
  int64_t num_layers() const override { return config_.num_hidden_layers; }
  std::string layer_prefix(int64_t i) const override { return "model.layers." + std::to_string(i); }
  Generator& dropout_generator() const override { return *dropout_gen_; }

  const Embedding& embed_tokens() const { return embed_tokens_; }
  const LlamaDecoderLayer& layer(int64_t i) const { return *layers_.at(static_cast<std::size_t>(i)); }
  const RMSNorm& norm() const { return norm_; }
  const RotaryEmbedding& rotary() const { return rotary_; }
  /// The output head's weight (V, C): lm_head.weight, or model.embed_tokens.weight when tied.
  const Tensor& head_weight() const;

 private:
  /// ids (B, T) -> the final norm's output (B, T, C), the head's input.
  Tensor hidden_states(const Tensor& ids, KVCache* cache) const;

  LlamaConfig config_;
  std::unique_ptr<Generator> init_gen_;     // released after construction
  std::unique_ptr<Generator> dropout_gen_;  // no dropout in these models; LoRA's dropout draws from it
  Embedding embed_tokens_;
  RotaryEmbedding rotary_;
  std::vector<std::unique_ptr<LlamaDecoderLayer>> layers_;
  RMSNorm norm_;
  std::unique_ptr<Linear> lm_head_;  // null when tied
};

}  // namespace lmf::nn
