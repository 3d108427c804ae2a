// nn::Attention (src/nn/attention.cpp): Hugging Face's names, values and gradients against the
// float64 fixtures (head_dim != hidden / heads, llama3 rotary, output bias, Qwen3 q/k norms, Qwen2
// q/k/v biases with grouped-query heads, multi-query), finite differences on a tiny layer, the KV
// cache path equal to the full forward, and config errors.
#include <catch2/catch.hpp>

#include "lmforge/autograd.h"
#include "lmforge/nn/attention.h"
#include "lmforge/ops.h"
#include "nn/block_fixture.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::nn;

namespace {

AttentionConfig attention_config_of(const nlohmann::json& j) {
  AttentionConfig c;
  c.hidden_size = j.at("hidden_size");
  c.n_head = j.at("n_head");
  c.n_kv_head = j.at("n_kv_head");
  c.head_dim = j.at("head_dim");
  c.qkv_bias = j.at("qkv_bias");
  c.o_bias = j.at("o_bias");
  c.qk_norm = j.at("qk_norm");
  c.norm_eps = j.at("norm_eps");
  const auto& r = j.at("rotary");
  c.rope_theta = r.at("theta");
  c.max_positions = r.at("max_positions");
  if (r.contains("scaling")) {
    const auto& s = r.at("scaling");
    c.rope_scaling = {RopeScalingType::llama3, s.at("factor"), s.at("low_freq_factor"), s.at("high_freq_factor"),
                      s.at("original_max_position_embeddings")};
  }
  return c;
}

void check_attention_case(const std::string& name) {
  const auto& c = lmf_test::block_case(name);
  Generator gen(7);
  Attention attn(attention_config_of(c.at("config")), gen);
  lmf_test::check_block(attn, c, [&](const Tensor& x) { return attn.forward(x); });
}

std::vector<std::string> names_of(const Module& m) {
  std::vector<std::string> names;
  for (const auto& [name, t] : m.state_dict()) names.push_back(name);
  return names;
}

}  // namespace

TEST_CASE("Attention uses Hugging Face's names; rotary tables stay out of the state dict", "[attention]") {
  Generator gen(1);
  AttentionConfig config;
  config.hidden_size = 16;
  config.n_head = 4;
  config.qkv_bias = true;
  config.qk_norm = true;
  Attention attn(config, gen);
  CHECK(names_of(attn) == std::vector<std::string>{"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                                                   "v_proj.weight", "v_proj.bias", "o_proj.weight",
                                                   "q_norm.weight", "k_norm.weight"});
  CHECK(attn.named_buffers().size() == 2);  // rotary_emb.cos, rotary_emb.sin
  CHECK(attn.has_submodule("rotary_emb"));
  config.qk_norm = false;
  config.qkv_bias = false;
  Attention plain(config, gen);
  CHECK(names_of(plain) == std::vector<std::string>{"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"});
}

TEST_CASE("Attention matches Hugging Face with head_dim != hidden / heads", "[attention]") {
  check_attention_case("mha_head_dim");
}
TEST_CASE("Attention matches Hugging Face with llama3 rope scaling and an o_proj bias", "[attention]") {
  check_attention_case("llama3_rope");
}
TEST_CASE("Attention matches Qwen3's per-head q/k RMSNorm before the rotation", "[attention]") {
  check_attention_case("qk_norm_mha");
}
TEST_CASE("Attention matches Qwen2's q/k/v biases with grouped-query heads", "[attention][gqa]") {
  check_attention_case("gqa_qkv_bias");
}
TEST_CASE("Attention matches multi-query heads with q/k norms", "[attention][gqa]") {
  check_attention_case("mqa_qk_norm");
}

TEST_CASE("Attention gradients of x and every parameter match finite differences", "[attention][grad]") {
  Generator gen(3);
  AttentionConfig config;
  config.hidden_size = 6;
  config.n_head = 2;
  config.head_dim = 4;
  config.qkv_bias = true;
  config.qk_norm = true;
  config.init_std = 0.5f;
  Attention attn(config, gen);
  std::vector<Tensor> inputs{lmf::test::random_tensor({1, 4, 6}, 4)};
  for (const Tensor& p : attn.parameters()) inputs.push_back(p);
  const auto r = lmf::test::gradcheck([&](const std::vector<Tensor>& in) { return attn.forward(in[0]); }, inputs);
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("Attention with a KV cache gives the full forward's outputs, prefix then token by token",
          "[attention][cache]") {
  Generator gen(5);
  AttentionConfig config;
  config.hidden_size = 16;
  config.n_head = 4;
  config.n_kv_head = 2;
  config.head_dim = 6;
  config.qk_norm = true;
  config.layer_index = 1;
  Attention attn(config, gen);
  NoGradGuard no_grad;
  const Tensor x = lmf::test::random_tensor({2, 7, 16}, 6, false);
  const std::vector<float> full = attn.forward(x).to_vector();  // (B, T, C)
  KVCache cache(2, 2, config.kv_heads(), config.head_size(), 8);
  std::vector<Tensor> parts{attn.forward(slice(x, 1, 0, 4), &cache)};
  cache.advance(4);
  for (int64_t t = 4; t < 7; ++t) {
    parts.push_back(attn.forward(slice(x, 1, t, t + 1), &cache));
    cache.advance(1);
  }
  const auto close = [](float a, float b) { return std::abs(a - b) <= 1e-5f + 1e-5f * std::abs(b); };
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 7; ++t) {
      const Tensor& part = parts[t < 4 ? 0 : t - 3];
      const int64_t tp = t < 4 ? t : 0;
      const std::vector<float> got = contiguous(slice(slice(part, 0, b, b + 1), 1, tp, tp + 1)).to_vector();
      for (int64_t c = 0; c < 16; ++c) {
        INFO("b " << b << " t " << t << " c " << c);
        CHECK(close(got[c], full[(b * 7 + t) * 16 + c]));
      }
    }
}

TEST_CASE("Attention refuses inconsistent head counts and a rotary of another head size", "[attention][errors]") {
  Generator gen(1);
  AttentionConfig config;
  config.hidden_size = 12;
  config.n_head = 4;
  config.n_kv_head = 3;
  CHECK_THROWS_WITH(Attention(config, gen), Catch::Contains("n_kv_head = 3"));
  config.n_kv_head = 0;
  config.n_head = 5;
  CHECK_THROWS_WITH(Attention(config, gen), Catch::Contains("head_dim"));
  config.n_head = 4;
  CHECK_THROWS_WITH(Attention(config, gen), Catch::Contains("even"));  // HS = 12 / 4 = 3
  config.head_dim = 4;
  const RotaryEmbedding other(RotaryConfig{8, 10000.0, 16, {}});
  CHECK_THROWS_WITH(Attention(config, gen, &other), Catch::Contains("rotary"));
  const RotaryEmbedding shared(RotaryConfig{4, 10000.0, 16, {}});
  Attention uses_shared(config, gen, &shared);
  CHECK(&uses_shared.rotary() == &shared);
  CHECK_FALSE(uses_shared.has_submodule("rotary_emb"));  // the owner registers it once
}
