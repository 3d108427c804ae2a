// Text generation for GPT models: a preallocated key/value cache, an inference-only forward pass
// that feeds a prompt once (prefill) and then one token at a time, and sampling with temperature,
// top-k and top-p from a seeded Generator, so that a given seed always produces the same text.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "lmforge/core/rng.h"
#include "lmforge/core/tensor.h"
#include "lmforge/nn/gpt.h"

namespace lmf::generate {

/// Keys and values of every layer for B sequences of equal length, preallocated up to
/// `capacity` positions (block_size by default); the activations of a step live in a workspace
/// kept here too, so decoding does not allocate per layer.
/// Layout per layer: (B, NH, capacity, HS), f32 on the CPU; positions [0, length()) are valid.
class KVCache {
 public:
  /// `capacity` 0 means config.block_size; it may not exceed block_size (wpe has no more rows).
  explicit KVCache(const nn::GPTConfig& config, int64_t batch = 1, int64_t capacity = 0);

  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  /// Positions already fed (the same for every sequence of the batch).
  int64_t length() const { return length_; }
  int64_t num_layers() const { return static_cast<int64_t>(keys_.size()); }
  /// Forgets every position; the buffers are kept.
  void clear() { length_ = 0; }

  const Tensor& keys(int64_t layer) const { return keys_.at(static_cast<std::size_t>(layer)); }
  const Tensor& values(int64_t layer) const { return values_.at(static_cast<std::size_t>(layer)); }

 private:
  friend Tensor forward_step(const nn::GPT& gpt, KVCache& cache, const Tensor& ids);
  nn::GPTConfig config_;
  int64_t batch_;
  int64_t capacity_;
  int64_t length_ = 0;
  std::vector<Tensor> keys_;    // per layer (B, NH, capacity, HS)
  std::vector<Tensor> values_;  // per layer (B, NH, capacity, HS)
  std::vector<float> work_;     // activations of one step, grown on demand and reused
};

/// Feeds `ids` (B, T_new) of i32 at positions [cache.length(), cache.length() + T_new) and returns
/// the logits of the last new position, (B, V). Reads only the model's parameters (no autograd
/// graph). Throws lmf::Error when the batch differs from the cache's, when the cache would
/// overflow (callers slide the window themselves; see generate()), for an id outside the
/// vocabulary, or when the model is not on the CPU in f32.
Tensor forward_step(const nn::GPT& gpt, KVCache& cache, const Tensor& ids);
/// Batch-1 form: ids (T_new) -> logits (V).
std::vector<float> forward_step(const nn::GPT& gpt, KVCache& cache,
                                const std::vector<int32_t>& ids);

/// How the next token is drawn from logits. Applied in this order: temperature, top-k, top-p.
struct SamplingOptions {
  /// Logits are divided by it; 0 means greedy (argmax, lowest id on ties, no draw consumed).
  float temperature = 1.f;
  /// Keep only the k most likely tokens; 0 keeps all.
  int64_t top_k = 0;
  /// Keep the smallest set of most likely tokens whose probability reaches top_p (at least one
  /// token); 1 keeps all. Must be in (0, 1].
  float top_p = 1.f;
  /// Throws lmf::Error naming the first invalid field.
  void validate() const;
};

/// Draws one token id from `logits` (V) with one gen.uniform() draw (none when greedy). Ties in
/// probability are ordered by id, so the result depends only on the logits and the generator.
int32_t sample(std::span<const float> logits, const SamplingOptions& options, Generator& gen);

struct GenerateOptions {
  int64_t max_new_tokens = 100;
  SamplingOptions sampling;
  /// Stop after emitting this id (it is still passed to the callback); -1 never stops early.
  int32_t stop_token = -1;
  /// Only ids below this are sampled (a tokenizer smaller than a padded model vocabulary);
  /// 0 means the model's vocab_size.
  int64_t vocab_limit = 0;
};

/// Called with each generated id as soon as it is drawn; return false to stop.
using TokenCallback = std::function<bool(int32_t)>;

/// Continues `prompt` (at least one id) with up to max_new_tokens ids and returns them (prompt
/// excluded). Batch 1. The prompt is fed once, then one token per step. When the context would
/// exceed block_size, the window slides: the cache is cleared and the last block_size tokens are
/// fed again, so every step sees exactly what GPT::forward on the last block_size tokens sees
/// (positions restart at 0), at the cost of one prefill per token once the window is full.
std::vector<int32_t> generate(const nn::GPT& gpt, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options, Generator& gen,
                              const TokenCallback& on_token = {});

}  // namespace lmf::generate
