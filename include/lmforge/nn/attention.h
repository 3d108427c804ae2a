// Causal self-attention of Llama-style decoders with Hugging Face's names (q_proj, k_proj, v_proj,
// o_proj, q_norm, k_norm): grouped-query heads (n_kv_head divides n_head; 1 is multi-query), a head
// size independent of hidden_size / n_head, optional q/k/v biases (Qwen2), optional per-head RMSNorm
// of q and k before the rotation (Qwen3), rotary positions, and an optional KV cache.
#pragma once
#include <cstdint>
#include <memory>

#include "lmforge/core/rng.h"
#include "lmforge/nn/kv_cache.h"
#include "lmforge/nn/linear.h"
#include "lmforge/nn/module.h"
#include "lmforge/nn/rms_norm.h"
#include "lmforge/nn/rotary.h"

namespace lmf::nn {

struct AttentionConfig {
  int64_t hidden_size = 0;  ///< C
  int64_t n_head = 0;       ///< NH
  int64_t n_kv_head = 0;    ///< NKV, dividing NH; 0 means NH
  int64_t head_dim = 0;     ///< HS; 0 means C / NH
  bool qkv_bias = false;    ///< biases on q_proj, k_proj, v_proj (Qwen2; HF Llama's attention_bias)
  bool o_bias = false;      ///< bias on o_proj (HF Llama's attention_bias sets both)
  bool qk_norm = false;     ///< RMSNorm over HS of each q and k head before the rotation (Qwen3)
  float norm_eps = 1e-6f;   ///< eps of q_norm and k_norm
  double rope_theta = 10000.0;
  int64_t max_positions = 2048;  ///< rotary table length (positions a cache may reach)
  RopeScaling rope_scaling;
  int64_t layer_index = 0;  ///< which layer of a KVCache this module appends to
  float init_std = 0.02f;   ///< N(0, init_std) weights; biases zero

  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int64_t head_size() const { return head_dim > 0 ? head_dim : (n_head > 0 ? hidden_size / n_head : 0); }
  /// Throws lmf::Error naming the first inconsistent field.
  void validate() const;
};

class Attention : public Module {
 public:
  /// Weights from `gen`. With `rotary` null the module builds and registers its own
  /// RotaryEmbedding ("rotary_emb"); otherwise it uses the given one (a model shares one table among
  /// its layers, as HF's model.rotary_emb), which must outlive it and have head_dim HS.
  Attention(const AttentionConfig& config, Generator& gen, const RotaryEmbedding* rotary = nullptr);

  /// x (B, T, C) -> (B, T, C). Without a cache: causal attention over the T positions (0 .. T-1).
  /// With a cache: the T new positions start at cache->length(); their keys and values are appended
  /// to layer layer_index and the queries attend to every cached position before them. The caller
  /// calls cache->advance(T) once every layer has run. The cache is filled without gradients.
  Tensor forward(const Tensor& x, KVCache* cache = nullptr) const;

  const AttentionConfig& config() const { return config_; }
  const RotaryEmbedding& rotary() const { return *rotary_; }
  Linear& q_proj() { return q_proj_; }
  Linear& k_proj() { return k_proj_; }
  Linear& v_proj() { return v_proj_; }
  Linear& o_proj() { return o_proj_; }
  const Linear& q_proj() const { return q_proj_; }
  const Linear& k_proj() const { return k_proj_; }
  const Linear& v_proj() const { return v_proj_; }
  const Linear& o_proj() const { return o_proj_; }
  /// Only registered (and used) when config().qk_norm.
  const RMSNorm& q_norm() const { return q_norm_; }
  const RMSNorm& k_norm() const { return k_norm_; }

 private:
  AttentionConfig config_;
  Linear q_proj_;
  Linear k_proj_;
  Linear v_proj_;
  Linear o_proj_;
  RMSNorm q_norm_;
  RMSNorm k_norm_;
  std::unique_ptr<RotaryEmbedding> own_rotary_;
  const RotaryEmbedding* rotary_;
};

}  // namespace lmf::nn
