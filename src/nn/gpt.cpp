// GPT-2 forward pass built from the functional ops; the backward comes from autograd. Shapes use
// B batch, T time, C channels, NH heads, HS head size, V vocabulary.
#include "lmforge/nn/gpt.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "lmforge/autograd.h"
#include "lmforge/nn/kv_cache.h"
#include "lmforge/nn/lora.h"
#include "lmforge/ops.h"

namespace lmf::nn {

void GPTConfig::validate() const {
  LMF_CHECK(n_layer > 0, "model.n_layer must be positive, got ", n_layer);
  LMF_CHECK(n_head > 0, "model.n_head must be positive, got ", n_head);
  LMF_CHECK(n_embd > 0, "model.n_embd must be positive, got ", n_embd);
  LMF_CHECK(n_embd % n_head == 0, "model.n_embd (", n_embd, ") must be divisible by model.n_head (",
            n_head, ")");
  LMF_CHECK(block_size > 0, "model.block_size must be positive, got ", block_size);
  LMF_CHECK(vocab_size > 0, "model.vocab_size must be positive, got ", vocab_size);
  LMF_CHECK(dropout >= 0.f && dropout < 1.f, "model.dropout must be in [0, 1), got ", dropout);
}

namespace {
// GPT-2 scales the residual projections so the residual stream's variance does not grow with depth.
float residual_std(const GPTConfig& config) {
  return 0.02f / std::sqrt(2.f * static_cast<float>(config.n_layer));
}
}  // namespace

CausalSelfAttention::CausalSelfAttention(const GPTConfig& config, Generator& init_gen,
                                         Generator& dropout_gen)
    : n_head_(config.n_head),
      n_embd_(config.n_embd),
      dropout_(config.dropout),
      dropout_gen_(&dropout_gen),
      c_attn_(config.n_embd, 3 * config.n_embd, config.bias, init_gen),
      c_proj_(config.n_embd, config.n_embd, config.bias, init_gen, residual_std(config)) {
  register_module("c_attn", c_attn_);
  register_module("c_proj", c_proj_);
}

Tensor CausalSelfAttention::forward(const Tensor& x, KVCache* cache, int64_t layer) const {
  Tensor y;
  if (cache == nullptr) {
    y = causal_self_attention(c_attn_.forward(x), n_head_);  // (B, T, 3C) -> (B, T, C)
  } else {
    // q, k, v as (B, NH, T, HS) views of the projection; the cache copies k and v in and hands back
    // every cached position, which the attention op reads in place.
    const int64_t b = x.size(0), t = x.size(1), hs = n_embd_ / n_head_;
    const Tensor heads = view(c_attn_.forward(x), {b, t, 3 * n_head_, hs});  // (B, T, 3 NH, HS)
    const auto part = [&](int64_t i) { return transpose(slice(heads, 2, i * n_head_, (i + 1) * n_head_), 1, 2); };
    const auto [keys, values] = cache->append(layer, part(1), part(2));  // (B, NH, L + T, HS)
    y = reshape(transpose(attention(part(0), keys, values), 1, 2), {b, t, n_embd_});  // (B, T, C)
  }
  y = c_proj_.forward(y);
  return dropout(y, dropout_, is_training(), *dropout_gen_);
}

MLP::MLP(const GPTConfig& config, Generator& init_gen, Generator& dropout_gen)
    : dropout_(config.dropout),
      dropout_gen_(&dropout_gen),
      c_fc_(config.n_embd, 4 * config.n_embd, config.bias, init_gen),
      c_proj_(4 * config.n_embd, config.n_embd, config.bias, init_gen, residual_std(config)) {
  register_module("c_fc", c_fc_);
  register_module("c_proj", c_proj_);
}

Tensor MLP::forward(const Tensor& x) const {
  Tensor h = c_fc_.forward_gelu(x);  // (B, T, 4C)
  h = c_proj_.forward(h);             // (B, T, C)
  return dropout(h, dropout_, is_training(), *dropout_gen_);
}

Block::Block(const GPTConfig& config, Generator& init_gen, Generator& dropout_gen)
    : ln_1_(config.n_embd, config.bias),
      attn_(config, init_gen, dropout_gen),
      ln_2_(config.n_embd, config.bias),
      mlp_(config, init_gen, dropout_gen) {
  register_module("ln_1", ln_1_);
  register_module("attn", attn_);
  register_module("ln_2", ln_2_);
  register_module("mlp", mlp_);
}

Tensor Block::forward(const Tensor& x, KVCache* cache, int64_t layer) const {
  // h = x + attn(ln_1(x)) and ln_2(h) in one pass (B, T, C)
  auto [h, normed] =
      add_layer_norm(x, attn_.forward(ln_1_.forward(x), cache, layer), ln_2_.weight(), ln_2_.bias(), ln_2_.eps());
  return add(h, mlp_.forward(normed));
}

namespace {
const GPTConfig& validated(const GPTConfig& config) {
  config.validate();
  return config;
}
// Dropout masks use their own stream so that changing dropout never changes the initial weights.
constexpr uint64_t kDropoutStream = 0x9E3779B97F4A7C15ull;
}  // namespace

GPT::GPT(const GPTConfig& config, uint64_t seed)
    : config_(validated(config)),
      init_gen_(std::make_unique<Generator>(seed)),
      dropout_gen_(std::make_unique<Generator>(seed ^ kDropoutStream)),
      wte_(config.vocab_size, config.n_embd, *init_gen_),
      wpe_(config.block_size, config.n_embd, *init_gen_),
      ln_f_(config.n_embd, config.bias) {
  for (int64_t i = 0; i < config.n_layer; ++i)
    h_.push_back(std::make_unique<Block>(config, *init_gen_, *dropout_gen_));
  register_module("wte", wte_);
  register_module("wpe", wpe_);
  for (std::size_t i = 0; i < h_.size(); ++i) register_module("h." + std::to_string(i), *h_[i]);
  register_module("ln_f", ln_f_);
  init_gen_.reset();
}

Tensor GPT::hidden_states(const Tensor& ids, KVCache* cache) const {
  LMF_CHECK(ids.dim() == 2, "GPT input ids must be (B, T), got ", shape_str(ids.shape()));
  LMF_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::u16,
            "GPT input ids must be i32 or u16, got ", dtype_name(ids.dtype()));
  const int64_t T = ids.size(1), start = cache ? cache->length() : 0;
  LMF_CHECK(T >= 1 && T <= config_.block_size, "sequence length ", T,
            " is outside [1, block_size = ", config_.block_size, "]");
  if (cache) {  // every check before the first layer appends, so a refused call leaves the cache as it was
    LMF_CHECK(!grad_enabled() || !needs_grad(parameters()),
              "GPT::forward with a KV cache is for inference: run it under NoGradGuard");
    LMF_CHECK(cache->num_layers() == config_.n_layer && ids.size(0) == cache->batch(), "KV cache of ",
              cache->num_layers(), " layers and batch ", cache->batch(), " for a model of ", config_.n_layer,
              " layers and ids of shape ", shape_str(ids.shape()));
    LMF_CHECK(start + T <= cache->capacity(), "KV cache: ", start, " cached + ", T,
              " new positions exceed its capacity of ", cache->capacity());
    LMF_CHECK(start + T <= config_.block_size, "KV cache: ", start, " cached + ", T,
              " new positions exceed block_size = ", config_.block_size, " (wpe has no more rows)");
  }
  if (ids.device().is_cpu()) {
    // Checked here (not only in the embedding op) to name the position and the vocabulary size.
    const Tensor c = ids.contiguous_copy();
    const int64_t n = c.numel(), V = config_.vocab_size;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = c.dtype() == DType::i32 ? c.data<int32_t>()[i] : c.data<uint16_t>()[i];
      LMF_CHECK(id >= 0 && id < V, "token id ", id, " at (", i / T, ", ", i % T,
                ") is outside the vocabulary [0, ", V, ")");
    }
  }
  Tensor x = add(wte_.forward(ids), slice(wpe_.weight(), 0, start, start + T));  // (B, T, C)
  x = dropout(x, config_.dropout, is_training(), *dropout_gen_);
  for (std::size_t l = 0; l < h_.size(); ++l) x = h_[l]->forward(x, cache, static_cast<int64_t>(l));
  if (cache) cache->advance(T);
  return ln_f_.forward(x);  // (B, T, C)
}

Tensor GPT::forward(const Tensor& ids, KVCache* cache) const {
  // The head is tied to the token embedding: logits = x · wteᵀ.
  return linear(hidden_states(ids, cache), wte_.weight());  // (B, T, V)
}

GPT::Output GPT::forward(const Tensor& ids, const Tensor& targets, int32_t ignore_index) const {
  LMF_CHECK(targets.defined() && targets.shape() == ids.shape(), "targets of shape ",
            targets.defined() ? shape_str(targets.shape()) : std::string("(undefined)"),
            " for ids of shape ", shape_str(ids.shape()));
  return forward_with_loss(ids, targets, ignore_index);
}

Tensor GPT::forward_loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index) const {
  if (!wte_.weight().device().is_cuda()) return forward_with_loss(ids, targets, ignore_index).loss;
  LMF_CHECK(targets.defined() && targets.shape() == ids.shape(), "targets of shape ",
            targets.defined() ? shape_str(targets.shape()) : std::string("(undefined)"),
            " for ids of shape ", shape_str(ids.shape()));
  // Rows per chunk: about 256 MiB of f32 logits, a multiple of 128 (the GEMM's row tile).
  const int64_t rows = std::max<int64_t>(128, (int64_t(256) << 20) / (4 * config_.vocab_size) / 128 * 128);
  return lm_head_cross_entropy(hidden_states(ids, nullptr), wte_.weight(), targets, ignore_index, rows);
}

KVCache GPT::make_cache(int64_t batch, int64_t capacity) const {
  // wpe has block_size rows, so no position past it can be fed.
  LMF_CHECK(capacity >= 0 && capacity <= config_.block_size, "KV cache capacity ", capacity,
            " is outside [1, block_size = ", config_.block_size, "]");
  return KVCache(config_.n_layer, batch, config_.n_head, config_.n_embd / config_.n_head,
                 capacity > 0 ? capacity : config_.block_size, wte_.weight().device());
}

double GPT::flops_per_token(int64_t seq_len) const {
  return 6.0 * double(num_parameters(false)) +
         12.0 * double(config_.n_layer) * double(config_.n_embd) * double(seq_len);
}

CheckpointName GPT::checkpoint_name(const std::string& param_name) const {
  // Hugging Face's Conv1D stores (IN, OUT); our Linear holds (OUT, IN).
  const auto ends_with = [&](const char* s) {
    const std::string suffix(s);
    return param_name.size() >= suffix.size() &&
           param_name.compare(param_name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  const bool conv1d = ends_with("attn.c_attn.weight") || ends_with("attn.c_proj.weight") ||
                      ends_with("mlp.c_fc.weight") || ends_with("mlp.c_proj.weight");
  return {param_name, conv1d};
}

std::vector<std::string> GPT::lora_target_names() const { return nn::lora_target_names(); }

std::string gpt2_config_json(const GPTConfig& c) {
  nlohmann::json j = {
      {"model_type", "gpt2"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"n_layer", c.n_layer},
      {"n_head", c.n_head},
      {"n_embd", c.n_embd},
      {"n_positions", c.block_size},
      {"n_ctx", c.block_size},
      {"n_inner", nullptr},
      {"vocab_size", c.vocab_size},
      {"layer_norm_epsilon", 1e-5},
      {"activation_function", "gelu_new"},
      {"resid_pdrop", c.dropout},
      {"embd_pdrop", c.dropout},
      {"attn_pdrop", c.dropout},
      {"tie_word_embeddings", true},
      {"torch_dtype", "float32"},
  };
  if (!c.bias) j["bias"] = false;
  return j.dump(2) + "\n";
}

int64_t GPT::num_parameters(bool include_embeddings) const {
  int64_t n = Module::num_parameters();
  return include_embeddings ? n : n - wpe_.weight().numel();
}

}  // namespace lmf::nn
