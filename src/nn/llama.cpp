// The Llama-style decoder from the nn/ blocks. Each residual add is fused with the RMSNorm that
// follows it (add_rms_norm), so a layer reads its residual stream twice rather than four times.
// Shapes: B batch, T time, C hidden, V vocabulary, L layers, NH/NKV heads, HS head size.
#include "lmforge/nn/llama.h"

#include <algorithm>
#include <tuple>

#include <nlohmann/json.hpp>

#include "lmforge/autograd.h"
#include "lmforge/nn/kv_cache.h"
#include "lmforge/ops.h"

namespace lmf::nn {

int64_t LlamaConfig::head_size() const {
  if (head_dim > 0) return head_dim;
  return num_attention_heads > 0 ? hidden_size / num_attention_heads : 0;
}

std::string LlamaConfig::hf_model_type() const {
  if (!model_type.empty()) return model_type;
  if (qk_norm) return "qwen3";
  if (qkv_bias && !o_bias) return "qwen2";
  return "llama";
}

void LlamaConfig::validate() const {
  LMF_CHECK(vocab_size > 0, "vocab_size must be positive, got ", vocab_size);
  LMF_CHECK(hidden_size > 0, "hidden_size must be positive, got ", hidden_size);
  LMF_CHECK(intermediate_size > 0, "intermediate_size must be positive, got ", intermediate_size);
  LMF_CHECK(num_hidden_layers > 0, "num_hidden_layers must be positive, got ", num_hidden_layers);
  LMF_CHECK(num_attention_heads > 0, "num_attention_heads must be positive, got ", num_attention_heads);
  LMF_CHECK(num_key_value_heads >= 0 && num_attention_heads % kv_heads() == 0, "num_key_value_heads (",
            num_key_value_heads, ") must divide num_attention_heads (", num_attention_heads, ")");
  LMF_CHECK(head_dim >= 0, "head_dim must be positive, got ", head_dim);
  LMF_CHECK(head_dim > 0 || hidden_size % num_attention_heads == 0, "hidden_size (", hidden_size,
            ") is not a multiple of num_attention_heads (", num_attention_heads, "); set head_dim");
  LMF_CHECK(head_size() % 2 == 0, "head_dim must be even (rotary pairs), got ", head_size());
  LMF_CHECK(max_position_embeddings > 0, "max_position_embeddings must be positive, got ",
            max_position_embeddings);
  LMF_CHECK(rms_norm_eps > 0 && rms_norm_eps < 1, "rms_norm_eps must be in (0, 1), got ", rms_norm_eps);
  LMF_CHECK(rope_theta > 0, "rope_theta must be positive, got ", rope_theta);
  LMF_CHECK(initializer_range > 0, "initializer_range must be positive, got ", initializer_range);
  const std::string type = hf_model_type();
  LMF_CHECK(type == "llama" || type == "qwen2" || type == "qwen3" || type == "mistral", "model_type \"", type,
            "\" is not a Llama-style model type (llama, qwen2, qwen3, mistral)");
  // What each model type's config.json can say, so a written checkpoint means the same model.
  if (type == "qwen2") {
    LMF_CHECK(qkv_bias && !o_bias && !qk_norm, "qwen2 models have q/k/v biases, no o_proj bias and no q/k norms");
  } else if (type == "mistral") {
    LMF_CHECK(!qkv_bias && !o_bias && !qk_norm, "mistral models have no attention biases and no q/k norms");
  } else {
    LMF_CHECK(qkv_bias == o_bias, "attention_bias: ", type, " models bias all of q/k/v/o_proj or none");
    LMF_CHECK(type == "qwen3" || !qk_norm, "llama models have no q/k norms (qwen3 has)");
  }
  RotaryConfig{head_size(), rope_theta, max_position_embeddings, rope_scaling}.validate();
}

std::string llama_config_json(const LlamaConfig& c) {
  using json = nlohmann::json;
  const std::string type = c.hf_model_type();
  const char* arch = type == "qwen2" ? "Qwen2ForCausalLM"
                     : type == "qwen3" ? "Qwen3ForCausalLM"
                     : type == "mistral" ? "MistralForCausalLM"
                                         : "LlamaForCausalLM";
  json rope = nullptr;
  if (c.rope_scaling.type == RopeScalingType::linear) {
    rope = {{"rope_type", "linear"}, {"type", "linear"}, {"factor", c.rope_scaling.factor}};
  } else if (c.rope_scaling.type == RopeScalingType::llama3) {
    rope = {{"rope_type", "llama3"},
            {"factor", c.rope_scaling.factor},
            {"low_freq_factor", c.rope_scaling.low_freq_factor},
            {"high_freq_factor", c.rope_scaling.high_freq_factor},
            {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  }
  json j = {
      {"architectures", {arch}},
      {"model_type", type},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.kv_heads()},
      {"head_dim", c.head_size()},
      {"hidden_act", "silu"},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"rope_scaling", rope},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"attention_dropout", 0.0},
      {"initializer_range", c.initializer_range},
      {"use_cache", true},
      {"torch_dtype", "float32"},
  };
  if (type == "llama") {
    j["attention_bias"] = c.o_bias;
    j["mlp_bias"] = false;
  } else if (type == "qwen3") {
    j["attention_bias"] = c.o_bias;
  }
  if (type == "qwen2" || type == "qwen3") {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = c.num_hidden_layers;
  }
  if (type == "mistral") j["sliding_window"] = nullptr;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  return j.dump(2) + "\n";
}

namespace {
const LlamaConfig& validated(const LlamaConfig& config) {
  config.validate();
  return config;
}

AttentionConfig attention_config(const LlamaConfig& c, int64_t layer) {
  AttentionConfig a;
  a.hidden_size = c.hidden_size;
  a.n_head = c.num_attention_heads;
  a.n_kv_head = c.kv_heads();
  a.head_dim = c.head_size();
  a.qkv_bias = c.qkv_bias;
  a.o_bias = c.o_bias;
  a.qk_norm = c.qk_norm;
  a.norm_eps = static_cast<float>(c.rms_norm_eps);
  a.rope_theta = c.rope_theta;
  a.max_positions = c.max_position_embeddings;
  a.rope_scaling = c.rope_scaling;
  a.layer_index = layer;
  a.init_std = c.initializer_range;
  return a;
}

constexpr uint64_t kDropoutStream = 0x9E3779B97F4A7C15ull;
}  // namespace

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& c, int64_t layer_index, const RotaryEmbedding& rotary,
                                     Generator& gen)
    : input_layernorm_(c.hidden_size, static_cast<float>(c.rms_norm_eps)),
      self_attn_(attention_config(c, layer_index), gen, &rotary),
      post_attention_layernorm_(c.hidden_size, static_cast<float>(c.rms_norm_eps)),
      mlp_(c.hidden_size, c.intermediate_size, gen, false, c.initializer_range) {
  register_module("input_layernorm", input_layernorm_);
  register_module("self_attn", self_attn_);
  register_module("post_attention_layernorm", post_attention_layernorm_);
  register_module("mlp", mlp_);
}

Llama::Llama(const LlamaConfig& config, uint64_t seed)
    : config_(validated(config)),
      init_gen_(std::make_unique<Generator>(seed)),
      dropout_gen_(std::make_unique<Generator>(seed ^ kDropoutStream)),
      embed_tokens_(config.vocab_size, config.hidden_size, *init_gen_, config.initializer_range),
      rotary_(RotaryConfig{config.head_size(), config.rope_theta, config.max_position_embeddings,
                           config.rope_scaling}),
      norm_(config.hidden_size, static_cast<float>(config.rms_norm_eps)) {
  for (int64_t i = 0; i < config.num_hidden_layers; ++i)
    layers_.push_back(std::make_unique<LlamaDecoderLayer>(config, i, rotary_, *init_gen_));
  if (!config.tie_word_embeddings)
    lm_head_ = std::make_unique<Linear>(config.hidden_size, config.vocab_size, false, *init_gen_,
                                        config.initializer_range);
  register_module("model.embed_tokens", embed_tokens_);
  for (std::size_t i = 0; i < layers_.size(); ++i) register_module("model.layers." + std::to_string(i), *layers_[i]);
  register_module("model.norm", norm_);
  register_module("model.rotary_emb", rotary_);
  if (lm_head_) register_module("lm_head", *lm_head_);
  init_gen_.reset();
}

const Tensor& Llama::head_weight() const { return lm_head_ ? lm_head_->weight() : embed_tokens_.weight(); }

Tensor Llama::forward(const Tensor& ids, KVCache* cache) const {
  const Tensor normed = hidden_states(ids, cache);
  return lm_head_ ? lm_head_->forward(normed) : linear(normed, embed_tokens_.weight());  // (B, T, V)
}

Tensor Llama::forward_loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index) const {
  // An adapter on the head (not one LoRA targets today) needs the head's own forward.
  const bool plain_head = !lm_head_ || lm_head_->lora() == nullptr;
  if (!embed_tokens_.weight().device().is_cuda() || !plain_head)
    return forward_with_loss(ids, targets, ignore_index).loss;
  // Rows per chunk: about 256 MiB of f32 logits, a multiple of 128 (the GEMM's row tile), as GPT.
  const int64_t rows = std::max<int64_t>(128, (int64_t(256) << 20) / (4 * config_.vocab_size) / 128 * 128);
  return chunked_loss(ids, targets, ignore_index, rows);
}

Tensor Llama::chunked_loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index, int64_t chunk) const {
  LMF_CHECK(targets.defined() && targets.shape() == ids.shape(), "targets of shape ",
            targets.defined() ? shape_str(targets.shape()) : std::string("(undefined)"),
            " for ids of shape ", shape_str(ids.shape()));
  // An untied head has no bias (Linear without one), so the head is linear(h, head_weight()).
  return lm_head_cross_entropy(hidden_states(ids, nullptr), head_weight(), targets, ignore_index, chunk);
}

Tensor Llama::hidden_states(const Tensor& ids, KVCache* cache) const {
  LMF_CHECK(ids.dim() == 2, "Llama input ids must be (B, T), got ", shape_str(ids.shape()));
  LMF_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::u16, "Llama input ids must be i32 or u16, got ",
            dtype_name(ids.dtype()));
  const int64_t T = ids.size(1), start = cache ? cache->length() : 0, ctx = config_.max_position_embeddings;
  LMF_CHECK(T >= 1 && T <= ctx, "sequence length ", T, " is outside [1, max_position_embeddings = ", ctx, "]");
  if (cache) {  // every check before the first layer appends, so a refused call leaves the cache as it was
    LMF_CHECK(!grad_enabled() || !needs_grad(parameters()),
              "Llama::forward with a KV cache is for inference: run it under NoGradGuard");
    LMF_CHECK(cache->num_layers() == config_.num_hidden_layers && ids.size(0) == cache->batch(), "KV cache of ",
              cache->num_layers(), " layers and batch ", cache->batch(), " for a model of ",
              config_.num_hidden_layers, " layers and ids of shape ", shape_str(ids.shape()));
    LMF_CHECK(start + T <= cache->capacity(), "KV cache: ", start, " cached + ", T,
              " new positions exceed its capacity of ", cache->capacity());
    LMF_CHECK(start + T <= ctx, "KV cache: ", start, " cached + ", T,
              " new positions exceed max_position_embeddings = ", ctx, " (the rotary table)");
  }
  if (ids.device().is_cpu()) {
    // Checked here (not only in the embedding op) to name the position and the vocabulary size.
    const Tensor c = ids.contiguous_copy();
    const int64_t n = c.numel(), V = config_.vocab_size;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = c.dtype() == DType::i32 ? c.data<int32_t>()[i] : c.data<uint16_t>()[i];
      LMF_CHECK(id >= 0 && id < V, "token id ", id, " at (", i / T, ", ", i % T, ") is outside the vocabulary [0, ",
                V, ")");
    }
  }
  Tensor x = embed_tokens_.forward(ids);                 // (B, T, C) residual stream
  Tensor normed = layers_[0]->input_layernorm().forward(x);
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    const LlamaDecoderLayer& layer = *layers_[l];
    // h = x + attn(norm(x)), and the MLP's input norm(h), in one pass
    auto [h, h_normed] = layer.post_attention_layernorm().forward_add(x, layer.self_attn().forward(normed, cache));
    const Tensor m = layer.mlp().forward(h_normed);
    const RMSNorm& next = l + 1 < layers_.size() ? layers_[l + 1]->input_layernorm() : norm_;
    std::tie(x, normed) = next.forward_add(h, m);  // x = h + mlp, normed: the next layer's (or final) norm
  }
  if (cache) cache->advance(T);
  return normed;
}

KVCache Llama::make_cache(int64_t batch, int64_t capacity) const {
  const int64_t ctx = config_.max_position_embeddings;
  LMF_CHECK(capacity >= 0 && capacity <= ctx, "KV cache capacity ", capacity,
            " is outside [1, max_position_embeddings = ", ctx, "]");
  return KVCache(config_.num_hidden_layers, batch, config_.kv_heads(), config_.head_size(),
                 capacity > 0 ? capacity : ctx, embed_tokens_.weight().device());
}

double Llama::flops_per_token(int64_t seq_len) const {
  int64_t n = Module::num_parameters();
  if (lm_head_) n -= embed_tokens_.weight().numel();  // a lookup, not a matrix product
  return 6.0 * double(n) + 12.0 * double(config_.num_hidden_layers) *
                               double(config_.num_attention_heads * config_.head_size()) * double(seq_len);
}

std::vector<std::string> Llama::lora_target_names() const {
  return {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
}

}  // namespace lmf::nn
