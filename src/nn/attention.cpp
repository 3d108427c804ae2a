// Llama-style causal self-attention. The projections stay (B, T, heads, HS); the rotary op reads
// them through a transposed view and writes the (B, NH, T, HS) heads attention wants, so the only
// layout copy is v's (inside attention) and the output's merge of the heads.
#include "lmforge/nn/attention.h"

#include "lmforge/autograd.h"
#include "lmforge/ops.h"

namespace lmf::nn {

void AttentionConfig::validate() const {
  LMF_CHECK(hidden_size > 0 && n_head > 0, "Attention: hidden_size and n_head must be positive, got ", hidden_size,
            " and ", n_head);
  LMF_CHECK(n_kv_head >= 0 && n_head % kv_heads() == 0, "Attention: n_kv_head = ", n_kv_head,
            " must divide n_head = ", n_head);
  LMF_CHECK(head_dim > 0 || hidden_size % n_head == 0, "Attention: hidden_size = ", hidden_size,
            " is not a multiple of n_head = ", n_head, "; set head_dim");
  LMF_CHECK(head_size() > 0 && head_size() % 2 == 0, "Attention: head_dim must be positive and even, got ",
            head_size());
  LMF_CHECK(layer_index >= 0, "Attention: layer_index must be non-negative, got ", layer_index);
}

namespace {
const AttentionConfig& validated(const AttentionConfig& config) {
  config.validate();
  return config;
}
}  // namespace

Attention::Attention(const AttentionConfig& config, Generator& gen, const RotaryEmbedding* rotary)
    : config_(validated(config)),
      q_proj_(config.hidden_size, config.n_head * config.head_size(), config.qkv_bias, gen, config.init_std),
      k_proj_(config.hidden_size, config.kv_heads() * config.head_size(), config.qkv_bias, gen, config.init_std),
      v_proj_(config.hidden_size, config.kv_heads() * config.head_size(), config.qkv_bias, gen, config.init_std),
      o_proj_(config.n_head * config.head_size(), config.hidden_size, config.o_bias, gen, config.init_std),
      q_norm_(config.head_size(), config.norm_eps),
      k_norm_(config.head_size(), config.norm_eps),
      rotary_(rotary) {
  register_module("q_proj", q_proj_);
  register_module("k_proj", k_proj_);
  register_module("v_proj", v_proj_);
  register_module("o_proj", o_proj_);
  if (config.qk_norm) {
    register_module("q_norm", q_norm_);
    register_module("k_norm", k_norm_);
  }
  if (!rotary_) {
    own_rotary_ = std::make_unique<RotaryEmbedding>(
        RotaryConfig{config.head_size(), config.rope_theta, config.max_positions, config.rope_scaling});
    register_module("rotary_emb", *own_rotary_);
    rotary_ = own_rotary_.get();
  }
  LMF_CHECK(rotary_->config().head_dim == config.head_size(), "Attention: the rotary embedding's head_dim ",
            rotary_->config().head_dim, " differs from the attention's ", config.head_size());
}

Tensor Attention::forward(const Tensor& x, KVCache* cache) const {
  LMF_CHECK(x.dim() == 3 && x.size(2) == config_.hidden_size, "Attention: x must be (B, T, ", config_.hidden_size,
            "), got ", shape_str(x.shape()));
  const int64_t b = x.size(0), t = x.size(1), nh = config_.n_head, nkv = config_.kv_heads();
  const int64_t hs = config_.head_size();
  Tensor q = reshape(q_proj_.forward(x), {b, t, nh, hs});   // (B, T, NH, HS)
  Tensor k = reshape(k_proj_.forward(x), {b, t, nkv, hs});  // (B, T, NKV, HS)
  const Tensor v = transpose(reshape(v_proj_.forward(x), {b, t, nkv, hs}), 1, 2);  // (B, NKV, T, HS) view
  if (config_.qk_norm) {
    q = q_norm_.forward(q);
    k = k_norm_.forward(k);
  }
  const int64_t offset = cache ? cache->length() : 0;
  q = rotary_->forward(transpose(q, 1, 2), offset);  // (B, NH, T, HS)
  k = rotary_->forward(transpose(k, 1, 2), offset);  // (B, NKV, T, HS)
  Tensor y;
  if (cache) {
    std::pair<Tensor, Tensor> kv;
    {
      NoGradGuard no_grad;
      kv = cache->append(config_.layer_index, k, v);  // (B, NKV, offset + T, HS) each
    }
    y = attention(q, kv.first, kv.second);  // (B, NH, T, HS)
  } else {
    y = attention(q, k, v);  // (B, NH, T, HS)
  }
  return o_proj_.forward(reshape(transpose(y, 1, 2), {b, t, nh * hs}));  // (B, T, C)
}

}  // namespace lmf::nn
