// Sampling the next token (temperature, top-k, top-p) and the decoding loop that drives the KV
// cache. Candidates are always ordered by (logit descending, id ascending) and a draw is one
// gen.uniform() value, so a seed fixes the output whatever the thread count.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "lmforge/autograd.h"
#include "lmforge/generate/generate.h"

namespace lmf::generate {

void SamplingOptions::validate() const {
  LMF_CHECK(std::isfinite(temperature) && temperature >= 0.f,
            "temperature must be >= 0 (0 = greedy), got ", temperature);
  LMF_CHECK(top_k >= 0, "top_k must be >= 0 (0 = no limit), got ", top_k);
  LMF_CHECK(top_p > 0.f && top_p <= 1.f, "top_p must be in (0, 1] (1 = no limit), got ", top_p);
}

namespace {

int32_t argmax(std::span<const float> logits) {
  // std::max_element returns the first maximum: ties go to the lowest id.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace

int32_t sample(std::span<const float> logits, const SamplingOptions& options, Generator& gen) {
  options.validate();
  const int64_t V = static_cast<int64_t>(logits.size());
  LMF_CHECK(V > 0, "sample: empty logits");
  if (options.temperature == 0.f) return argmax(logits);

  // Candidate ids, most likely first; only the top k need to be ordered.
  std::vector<int32_t> ids(static_cast<std::size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  const int64_t k = options.top_k > 0 ? std::min(options.top_k, V) : V;
  if (k < V) {
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), before);
    ids.resize(static_cast<std::size_t>(k));
  } else if (options.top_p < 1.f) {
    std::sort(ids.begin(), ids.end(), before);  // top-p needs the full order
  }

  // Softmax of logits / temperature over the candidates, in double so that tiny probabilities
  // at low temperature still sum correctly.
  const double max_logit = logits[argmax(logits)];
  std::vector<double> probs(ids.size());
  double total = 0.0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    probs[i] = std::exp((static_cast<double>(logits[ids[i]]) - max_logit) / options.temperature);
    total += probs[i];
  }
  std::size_t keep = ids.size();
  if (options.top_p < 1.f) {
    // The smallest prefix whose mass reaches top_p; the top token is always kept.
    double mass = 0.0;
    for (keep = 0; keep < ids.size();) {
      mass += probs[keep++] / total;
      if (mass >= options.top_p) break;
    }
    total = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
  }

  const double u = static_cast<double>(gen.uniform()) * total;
  double cumulative = 0.0;
  for (std::size_t i = 0; i < keep; ++i) {
    cumulative += probs[i];
    if (u < cumulative) return ids[i];
  }
  return ids[keep - 1];  // u within rounding of the total
}

std::vector<int32_t> generate(const nn::CausalLM& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options, Generator& gen, const TokenCallback& on_token) {
  options.sampling.validate();
  LMF_CHECK(!prompt.empty(), "generate: the prompt needs at least one token");
  LMF_CHECK(options.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ",
            options.max_new_tokens);
  const int64_t vocab = model.vocab_size();
  const int64_t limit = options.vocab_limit == 0 ? vocab : options.vocab_limit;
  LMF_CHECK(limit > 0 && limit <= vocab, "generate: vocab_limit ", options.vocab_limit,
            " is outside [1, vocab_size = ", vocab, "]");
  NoGradGuard no_grad;

  std::vector<int32_t> context = prompt;  // every token so far; the model sees its last block
  std::vector<int32_t> generated;
  if (options.max_new_tokens == 0) return generated;
  nn::KVCache cache = model.make_cache(1);
  const int64_t block = model.context_size();
  auto prefill_window = [&]() {
    cache.clear();
    const auto start = context.end() - std::min<int64_t>(static_cast<int64_t>(context.size()), block);
    return forward_step(model, cache, std::vector<int32_t>(start, context.end()));
  };

  std::vector<float> logits = prefill_window();
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const int32_t next = sample(std::span<const float>(logits.data(), limit), options.sampling, gen);
    context.push_back(next);
    generated.push_back(next);
    if (on_token && !on_token(next)) break;
    if (next == options.stop_token || step + 1 == options.max_new_tokens) break;
    // A full cache cannot take another position: slide by re-feeding the last block tokens.
    logits = cache.length() < cache.capacity() ? forward_step(model, cache, {next}) : prefill_window();
  }
  return generated;
}

}  // namespace lmf::generate
