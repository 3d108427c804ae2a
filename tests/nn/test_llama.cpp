// nn::Llama loaded from the Hugging Face directories of make_llama_fixtures.py (llama, qwen2, qwen3,
// mistral; GQA/MQA, llama3 and linear rope scaling, q/k/v biases, q/k norms, head_dim != C/NH, tied
// and untied heads; F32, BF16, F16, sharded) against an independent float64 implementation: logits,
// loss, gradients, and the cached forward against the full one.
#include <catch2/catch.hpp>

#include "lmforge/autograd.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/kv_cache.h"
#include "lmforge/nn/llama.h"
#include "lmforge/ops.h"
#include "nn/gpt_fixture.h"

using namespace lmf;

namespace {

// Tolerances, as scaled_max_error (max |error| / max |reference|). The f32 model rounds each
// product and sum with unit roundoff 6e-8; dot products of 32..64 terms, two layers, softmax and
// three norms compound that to measured errors of 3e-7..5e-7 on the logits and 2e-7..8e-7 on the
// gradients, so 1e-5 leaves a factor of ~15 for other CPUs' summation orders (the C++ side reads exactly the rounded file values the reference used, so storage
// dtype adds nothing). A wrong rotation pairing, a mis-grouped K/V head, a missing bias or norm
// moves logits by 1e-2 or more.
constexpr double kLogitTol = 1e-5;
constexpr double kGradTol = 1e-5;
// Cached and full forwards differ at most in the order of f32 sums over keys (measured: 0).
constexpr double kCacheTol = 1e-5;

const char* const kCases[] = {"llama_gqa_llama3", "qwen2_bias_tied", "qwen3_qknorm_mqa", "mistral_mha_tied"};

std::string case_dir(const std::string& name) {
  return std::string(LMF_SOURCE_DIR) + "/tests/reference/fixtures/llama/" + name;
}

nlohmann::json reference(const std::string& name) { return lmf_test::load_fixture("llama/" + name + "/reference.json"); }

}  // namespace

TEST_CASE("Llama: Hugging Face directories match the float64 reference (logits, loss, gradients)", "[llama]") {
  for (const char* name : kCases) {
    INFO("case " << name);
    const nlohmann::json ref = reference(name);
    std::unique_ptr<nn::CausalLM> model = io::load_model(case_dir(name));
    REQUIRE(dynamic_cast<nn::Llama*>(model.get()) != nullptr);
    const Tensor ids = lmf_test::ids_from_json(ref.at("ids"));
    const Tensor targets = lmf_test::ids_from_json(ref.at("targets"));
    const nn::LMOutput out = model->forward_with_loss(ids, targets);
    const double logit_err = lmf_test::scaled_max_error(out.logits, ref.at("logits"));
    INFO("logit error " << logit_err);
    CHECK(logit_err <= kLogitTol);
    const double loss = ref.at("loss").get<double>();
    CHECK(std::abs(double(out.loss.item()) - loss) <= kLogitTol * std::abs(loss));
    out.loss.backward();
    for (const auto& [pname, g] : ref.at("grads").items()) {
      const Tensor grad = model->parameter(pname).grad();
      REQUIRE(grad.defined());
      const double err = lmf_test::scaled_max_error(grad, g);
      INFO("gradient of " << pname << ": error " << err);
      CHECK(err <= kGradTol);
    }
  }
}

TEST_CASE("Llama: the cached forward (prefix, then one token at a time) equals the full forward", "[llama]") {
  for (const char* name : kCases) {
    INFO("case " << name);
    const nlohmann::json ref = reference(name);
    std::unique_ptr<nn::CausalLM> model = io::load_model(case_dir(name));
    NoGradGuard no_grad;
    const Tensor ids = lmf_test::ids_from_json(ref.at("ids"));
    const int64_t B = ids.size(0), T = ids.size(1), V = model->vocab_size();
    const std::vector<float> full = model->forward(ids).to_vector();
    nn::KVCache cache = model->make_cache(B, T);
    std::vector<Tensor> parts = {model->forward(slice(ids, 1, 0, 3).contiguous_copy(), &cache)};
    for (int64_t t = 3; t < T; ++t) parts.push_back(model->forward(slice(ids, 1, t, t + 1).contiguous_copy(), &cache));
    CHECK(cache.length() == T);
    const std::vector<float> cached = cat(parts, 1).to_vector();
    REQUIRE(cached.size() == full.size());
    double scale = 0, err = 0;
    for (std::size_t i = 0; i < full.size(); ++i) {
      scale = std::max(scale, double(std::abs(full[i])));
      err = std::max(err, double(std::abs(full[i] - cached[i])));
    }
    INFO("cached vs full: " << err / scale << " (V " << V << ")");
    CHECK(err / scale <= kCacheTol);
  }
}

TEST_CASE("Llama: built from a config, names are Hugging Face's; tied heads have no lm_head", "[llama]") {
  nn::LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 32;
  c.tie_word_embeddings = true;
  c.qk_norm = true;
  nn::Llama tied(c, 1);
  CHECK(tied.arch() == "qwen3");
  CHECK(tied.has_parameter("model.layers.1.self_attn.k_norm.weight"));
  CHECK(tied.parameter("model.layers.0.self_attn.q_proj.weight").shape() == Shape{64, 32});
  CHECK(tied.parameter("model.layers.0.self_attn.k_proj.weight").shape() == Shape{32, 32});
  CHECK(tied.parameter("model.layers.0.self_attn.o_proj.weight").shape() == Shape{32, 64});
  CHECK_FALSE(tied.has_parameter("lm_head.weight"));
  CHECK(tied.layer_prefix(1) == "model.layers.1");
  for (const auto& [pname, p] : tied.named_parameters()) CHECK(tied.checkpoint_name(pname).name == pname);
  c.tie_word_embeddings = false;
  c.qk_norm = false;
  nn::Llama untied(c, 1);
  CHECK(untied.arch() == "llama");
  CHECK(untied.parameter("lm_head.weight").shape() == Shape{50, 32});
  // 6 N without the embedding lookup + 12 L (NH HS) T.
  const double n = double(untied.num_parameters() - 50 * 32);
  CHECK(untied.flops_per_token(16) == Approx(6 * n + 12.0 * 2 * 64 * 16));
  CHECK(untied.lora_target_names().size() == 7);

  c.num_key_value_heads = 3;
  CHECK_THROWS_WITH(nn::Llama(c), Catch::Contains("num_key_value_heads"));
  c.num_key_value_heads = 2;
  c.head_dim = 0;
  c.hidden_size = 30;
  CHECK_THROWS_WITH(nn::Llama(c), Catch::Contains("head_dim"));
}

TEST_CASE("Llama: the chunked head's loss and gradients equal the unfused path's, tied and untied", "[llama]") {
  // chunked_loss is what forward_loss runs on a GPU (lm_head_cross_entropy, logits a few rows at a
  // time, recomputed in the backward); here on the CPU against forward_with_loss's full logits.
  // Both sum the same f32 products in chunks of rows, so the loss and gradients differ only by the
  // order of the per-row sums (the loss's mean, the head weight's sum over rows): within the f32
  // tolerance of the fixtures' reference comparison.
  for (const char* name : {"llama_gqa_llama3", "qwen2_bias_tied"}) {
    INFO("case " << name);
    const nlohmann::json ref = reference(name);
    std::unique_ptr<nn::CausalLM> model = io::load_model(case_dir(name));
    auto* llama = dynamic_cast<nn::Llama*>(model.get());
    REQUIRE(llama != nullptr);
    const Tensor ids = lmf_test::ids_from_json(ref.at("ids"));
    Tensor targets = lmf_test::ids_from_json(ref.at("targets")).contiguous_copy();
    targets.data<int32_t>()[1] = -1;  // an ignored position, as padding would be
    model->zero_grad();
    const Tensor unfused = model->forward_with_loss(ids, targets).loss;
    unfused.backward();
    std::vector<std::pair<std::string, std::vector<float>>> want;
    for (const auto& [pname, p] : model->named_parameters()) want.emplace_back(pname, p.grad().to_vector());
    for (const int64_t chunk : {int64_t(3), int64_t(0)}) {
      INFO("chunk " << chunk);
      model->zero_grad();
      const Tensor fused = llama->chunked_loss(ids, targets, -1, chunk);
      CHECK(std::abs(double(fused.item()) - double(unfused.item())) <= kLogitTol * std::abs(double(unfused.item())));
      fused.backward();
      for (const auto& [pname, g] : want) {
        INFO("gradient of " << pname);
        const std::vector<float> got = model->parameter(pname).grad().to_vector();
        double worst = 0, scale = 0;
        for (std::size_t i = 0; i < g.size(); ++i) {
          worst = std::max(worst, std::abs(double(got[i]) - double(g[i])));
          scale = std::max(scale, std::abs(double(g[i])));
        }
        CHECK(worst <= kGradTol * std::max(scale, 1e-30));
      }
    }
    // forward_loss on the CPU is the generic path, bit for bit.
    CHECK(llama->forward_loss(ids, targets).item() == unfused.item());
  }
}
