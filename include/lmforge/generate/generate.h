// Text generation over any nn::CausalLM: the model's own forward with its KV cache feeds a prompt
// once (prefill) and then one token at a time, and sampling with temperature, top-k and top-p from
// a seeded Generator, so that a given seed always produces the same text. There is no second
// forward pass here: what the model computes (LoRA adapters included) is what is sampled from.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "lmforge/core/rng.h"
#include "lmforge/core/tensor.h"
#include "lmforge/nn/causal_lm.h"
#include "lmforge/nn/kv_cache.h"

namespace lmf::generate {

/// Feeds `ids` (B, T_new) of i32 at positions [cache.length(), cache.length() + T_new) through
/// model.forward(ids, &cache) without recording a graph and returns the logits of the last new
/// position, (B, V), on the CPU. ids may live on the CPU or on the model's device. Throws
/// lmf::Error (and leaves the cache as it was) when the batch differs from the cache's, when the
/// cache would overflow (callers slide the window themselves; see generate()), or for an id outside
/// the vocabulary.
Tensor forward_step(const nn::CausalLM& model, nn::KVCache& cache, const Tensor& ids);
/// Batch-1 form: ids (T_new) -> logits (V).
std::vector<float> forward_step(const nn::CausalLM& model, nn::KVCache& cache, const std::vector<int32_t>& ids);

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
  /// 0 means the model's vocab_size().
  int64_t vocab_limit = 0;
};

/// Called with each generated id as soon as it is drawn; return false to stop.
using TokenCallback = std::function<bool(int32_t)>;

/// Continues `prompt` (at least one id) with up to max_new_tokens ids and returns them (prompt
/// excluded). Batch 1, on the model's device. The prompt is fed once, then one token per step.
/// When the context would exceed context_size(), the window slides: the cache is cleared and the
/// last context_size() tokens are fed again, so every step sees exactly what model.forward on the
/// last context_size() tokens sees (positions restart at 0), at the cost of one prefill per token
/// once the window is full.
std::vector<int32_t> generate(const nn::CausalLM& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options, Generator& gen,
                              const TokenCallback& on_token = {});

}  // namespace lmf::generate
