// Generation: GPT::forward with a KV cache against GPT::forward without one at every position
// (prefill, one token at a time, batches, a bias-free model, and across the block_size slide), greedy
// decoding against the argmax of the full forward pass, and the sampling rules (top-k, top-p, seeds,
// validation).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>

#include "lmforge/autograd.h"
#include "lmforge/generate/generate.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/ops.h"

using lmf::Generator;
using lmf::Tensor;
using lmf::nn::GPT;
using lmf::nn::GPTConfig;
namespace gen = lmf::generate;

namespace {

GPTConfig tiny_config(bool bias = true) {
  GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.block_size = 8;
  c.vocab_size = 23;
  c.bias = bias;
  return c;
}

// Every parameter random (biases and gains included) and large enough that the logits spread
// over several units, so a wrong position, head or cached value changes them visibly.
std::unique_ptr<GPT> random_gpt(const GPTConfig& c, uint64_t seed = 7) {
  auto gpt = std::make_unique<GPT>(c, seed);
  Generator g(seed + 1000);
  lmf::NoGradGuard no_grad;
  for (auto& [name, p] : gpt->named_parameters()) {
    Tensor dst = p;
    dst.copy_(Tensor::randn(p.shape(), g, 0.f, 0.4f));
  }
  return gpt;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  Generator g(seed);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back(static_cast<int32_t>(g.uniform() * static_cast<float>(vocab)));
  return out;
}

// Logits (V) of GPT::forward at position `t` of `ids`.
std::vector<float> full_logits_at(const GPT& gpt, const std::vector<int32_t>& ids, int64_t t) {
  lmf::NoGradGuard no_grad;
  const int64_t T = static_cast<int64_t>(ids.size()), V = gpt.config().vocab_size;
  const std::vector<float> all = gpt.forward(Tensor::from_vector(ids, {1, T})).to_vector();
  return std::vector<float>(all.begin() + t * V, all.begin() + (t + 1) * V);
}

// The two paths sum the same f32 products in different orders (a few rows against the whole
// sequence, keys read from the cache against the fused projection), so they agree to a few ulps of
// the largest logit, not bit for bit; 1e-5 of the row's largest magnitude is far below any real
// fault (a wrong position or key moves logits by O(0.1)).
constexpr double kRelTol = 1e-5;

void check_close(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  double scale = 1.0, worst = 0.0;
  for (float w : want) scale = std::max(scale, std::abs(double(w)));
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(double(got[i]) - double(want[i])));
  INFO("max abs difference " << worst << " at logit scale " << scale);
  CHECK(worst <= kRelTol * scale);
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

TEST_CASE("KV-cache logits equal GPT::forward at every position, prefill then one token at a time") {
  for (bool bias : {true, false}) {
    const GPTConfig c = tiny_config(bias);
    auto gpt = random_gpt(c);
    const std::vector<int32_t> ids = random_tokens(c.block_size, c.vocab_size, 3);
    auto cache = gpt->make_cache();
    // Prefill the first 3 tokens in one call, then feed the rest one by one.
    std::vector<float> logits = gen::forward_step(*gpt, cache, {ids[0], ids[1], ids[2]});
    CHECK(cache.length() == 3);
    check_close(logits, full_logits_at(*gpt, ids, 2));
    for (int64_t t = 3; t < c.block_size; ++t) {
      logits = gen::forward_step(*gpt, cache, {ids[t]});
      CHECK(cache.length() == t + 1);
      check_close(logits, full_logits_at(*gpt, ids, t));
    }
  }
}

TEST_CASE("KV-cache logits match for a batch of sequences and for long prefills") {
  const GPTConfig c = tiny_config();
  auto gpt = random_gpt(c);
  const int64_t B = 3, T = c.block_size, V = c.vocab_size;
  std::vector<std::vector<int32_t>> rows;
  for (int64_t b = 0; b < B; ++b) rows.push_back(random_tokens(T, V, 10 + b));
  auto cache = gpt->make_cache(B);
  // Prefill 5 positions (3 x 5 = 15 rows: the transposed W·xᵀ products), then one at a time.
  for (int64_t start = 0, len = 5; start < T; start += len, len = 1) {
    std::vector<int32_t> chunk;
    for (int64_t b = 0; b < B; ++b)
      chunk.insert(chunk.end(), rows[b].begin() + start, rows[b].begin() + start + len);
    const std::vector<float> logits =
        gen::forward_step(*gpt, cache, Tensor::from_vector(chunk, {B, len})).to_vector();
    for (int64_t b = 0; b < B; ++b)
      check_close(std::vector<float>(logits.begin() + b * V, logits.begin() + (b + 1) * V),
                  full_logits_at(*gpt, rows[b], start + len - 1));
  }

  // A prefill with enough rows (B * T >= 16) for the plain x·Wᵀ product.
  auto big = gpt->make_cache(B);
  std::vector<int32_t> all;
  for (const auto& r : rows) all.insert(all.end(), r.begin(), r.end());
  const std::vector<float> logits =
      gen::forward_step(*gpt, big, Tensor::from_vector(all, {B, T})).to_vector();
  for (int64_t b = 0; b < B; ++b)
    check_close(std::vector<float>(logits.begin() + b * V, logits.begin() + (b + 1) * V),
                full_logits_at(*gpt, rows[b], T - 1));
}

TEST_CASE("Past block_size the window slides: logits equal GPT::forward on the last block_size tokens") {
  const GPTConfig c = tiny_config();
  auto gpt = random_gpt(c);
  const int64_t block = c.block_size;
  const std::vector<int32_t> ids = random_tokens(3 * block, c.vocab_size, 5);
  // The documented sliding rule, as generate() applies it: once the cache is full, clear it and
  // feed the last block_size tokens again.
  auto cache = gpt->make_cache();
  std::vector<int32_t> context(ids.begin(), ids.begin() + 4);
  std::vector<float> logits = gen::forward_step(*gpt, cache, context);
  for (std::size_t i = 4; i < ids.size(); ++i) {
    context.push_back(ids[i]);
    if (cache.length() < cache.capacity()) {
      logits = gen::forward_step(*gpt, cache, {ids[i]});
    } else {
      cache.clear();
      logits = gen::forward_step(*gpt, cache,
                                 std::vector<int32_t>(context.end() - block, context.end()));
    }
    const int64_t n = static_cast<int64_t>(context.size());
    const std::vector<int32_t> window(context.end() - std::min(n, block), context.end());
    check_close(logits, full_logits_at(*gpt, window, static_cast<int64_t>(window.size()) - 1));
  }
}

TEST_CASE("Greedy generation equals the argmax of the full forward pass step by step, across the slide") {
  const GPTConfig c = tiny_config();
  auto gpt = random_gpt(c);
  const std::vector<int32_t> prompt = {1, 5, 2};
  gen::GenerateOptions options;
  options.max_new_tokens = 3 * c.block_size;
  options.sampling.temperature = 0.f;
  Generator g(1);
  std::vector<int32_t> streamed;
  const std::vector<int32_t> out = gen::generate(*gpt, prompt, options, g, [&](int32_t id) {
    streamed.push_back(id);
    return true;
  });
  REQUIRE(out.size() == static_cast<std::size_t>(options.max_new_tokens));
  CHECK(streamed == out);
  CHECK(g.state().offset == 0);  // greedy draws nothing

  std::vector<int32_t> context = prompt;
  for (int32_t id : out) {
    const int64_t n = static_cast<int64_t>(context.size());
    const std::vector<int32_t> window(context.end() - std::min(n, c.block_size), context.end());
    CHECK(id == argmax(full_logits_at(*gpt, window, static_cast<int64_t>(window.size()) - 1)));
    context.push_back(id);
  }
}

TEST_CASE("top_k = 1 and a tiny top_p both reduce sampling to greedy") {
  const GPTConfig c = tiny_config();
  auto gpt = random_gpt(c);
  const std::vector<int32_t> prompt = {4, 4, 9};
  gen::GenerateOptions greedy;
  greedy.max_new_tokens = 20;
  greedy.sampling.temperature = 0.f;
  Generator g0(1);
  const auto expected = gen::generate(*gpt, prompt, greedy, g0);

  gen::GenerateOptions top_k = greedy;
  top_k.sampling = {1.3f, 1, 1.f};
  Generator g1(2);
  CHECK(gen::generate(*gpt, prompt, top_k, g1) == expected);

  gen::GenerateOptions top_p = greedy;
  top_p.sampling = {1.3f, 0, 1e-6f};
  Generator g2(3);
  CHECK(gen::generate(*gpt, prompt, top_p, g2) == expected);
}

TEST_CASE("The same seed gives the same samples; another seed gives different ones") {
  const GPTConfig c = tiny_config();
  auto gpt = random_gpt(c);
  gen::GenerateOptions options;
  options.max_new_tokens = 40;
  options.sampling.temperature = 1.5f;  // flat enough that two seeds cannot agree by chance
  const std::vector<int32_t> prompt = {3};
  Generator a(42), b(42), other(43);
  const auto first = gen::generate(*gpt, prompt, options, a);
  CHECK(gen::generate(*gpt, prompt, options, b) == first);
  CHECK(gen::generate(*gpt, prompt, options, other) != first);
  CHECK(a.state() == b.state());
}

TEST_CASE("sample keeps only the top-k or the top-p nucleus, with the right frequencies") {
  // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1.
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                     std::log(0.3f)};
  const int draws = 20000;
  auto frequencies = [&](gen::SamplingOptions options, uint64_t seed) {
    Generator g(seed);
    std::map<int32_t, double> f;
    for (int i = 0; i < draws; ++i) f[gen::sample(logits, options, g)] += 1.0 / draws;
    return f;
  };
  // No limit: every token appears with its probability (5 sigma of a binomial is < 0.02).
  auto all = frequencies({1.f, 0, 1.f}, 1);
  CHECK(all[1] == Approx(0.5).margin(0.02));
  CHECK(all[3] == Approx(0.3).margin(0.02));
  CHECK(all[0] == Approx(0.15).margin(0.02));
  CHECK(all[2] == Approx(0.05).margin(0.02));
  // top-k 2 renormalises over {1, 3}: 0.625, 0.375.
  auto k2 = frequencies({1.f, 2, 1.f}, 2);
  CHECK(k2.size() == 2);
  CHECK(k2[1] == Approx(0.625).margin(0.02));
  // top-p 0.7: 0.5 < 0.7 <= 0.8, so the nucleus is {1, 3}.
  auto p7 = frequencies({1.f, 0, 0.7f}, 3);
  CHECK(p7.size() == 2);
  CHECK(p7[3] == Approx(0.375).margin(0.02));
  // top-p 0.5 exactly reaches the first token's mass: only it remains.
  CHECK(frequencies({1.f, 0, 0.5f}, 4).size() == 1);
  // Temperature 0 is argmax and ties go to the lowest id.
  Generator g(5);
  CHECK(gen::sample(std::vector<float>{1.f, 3.f, 3.f}, {0.f, 0, 1.f}, g) == 1);
}

TEST_CASE("Invalid sampling options and inputs are errors that leave the cache untouched") {
  Generator g(1);
  const std::vector<float> logits = {0.f, 1.f};
  CHECK_THROWS_WITH(gen::sample(logits, {-0.5f, 0, 1.f}, g), Catch::Contains("temperature"));
  CHECK_THROWS_WITH(gen::sample(logits, {1.f, -1, 1.f}, g), Catch::Contains("top_k"));
  CHECK_THROWS_WITH(gen::sample(logits, {1.f, 0, 0.f}, g), Catch::Contains("top_p"));
  CHECK_THROWS_WITH(gen::sample(logits, {1.f, 0, 1.5f}, g), Catch::Contains("top_p"));

  const GPTConfig c = tiny_config();
  auto gpt = random_gpt(c);
  auto cache = gpt->make_cache();
  gen::forward_step(*gpt, cache, {1, 2});
  CHECK_THROWS_WITH(gen::forward_step(*gpt, cache, {1, 99}), Catch::Contains("99"));
  CHECK(cache.length() == 2);
  CHECK_THROWS_WITH(gen::forward_step(*gpt, cache, std::vector<int32_t>(7, 1)),
                    Catch::Contains("capacity"));
  CHECK_THROWS_WITH(gen::forward_step(*gpt, cache, Tensor::from_vector(std::vector<int32_t>{1, 2}, {2, 1})),
                    Catch::Contains("batch"));
  CHECK_THROWS(gpt->make_cache(1, c.block_size + 1));
  gen::GenerateOptions options;
  CHECK_THROWS_WITH(gen::generate(*gpt, {}, options, g), Catch::Contains("prompt"));
}

TEST_CASE("Generation stops at the stop token or when the callback declines, and respects vocab_limit") {
  const GPTConfig c = tiny_config();
  auto gpt = random_gpt(c);
  gen::GenerateOptions options;
  options.max_new_tokens = 30;
  options.sampling.temperature = 2.f;
  options.vocab_limit = 5;
  Generator g(9);
  const auto out = gen::generate(*gpt, {0}, options, g);
  REQUIRE(out.size() == 30);
  for (int32_t id : out) CHECK(id < 5);

  options.stop_token = out[3];
  Generator g2(9);
  const auto stopped = gen::generate(*gpt, {0}, options, g2);
  CHECK(stopped.back() == out[3]);
  CHECK(stopped.size() <= 4);

  int calls = 0;
  Generator g3(9);
  const auto declined = gen::generate(*gpt, {0}, gen::GenerateOptions{}, g3, [&](int32_t) {
    return ++calls < 2;
  });
  CHECK(declined.size() == 2);
}
