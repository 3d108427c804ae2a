// The GPT-2 model: Hugging Face parameter names and shapes, GPT-2 initialisation, agreement with an
// independent float64 PyTorch implementation (logits, loss, every gradient), input checks,
// dropout modes, gradient accumulation, freezing, and that it can overfit a fixed batch.
#include <catch2/catch.hpp>

#include <cmath>
#include <set>

#include "lmforge/autograd.h"
#include "lmforge/nn/kv_cache.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"
#include "nn/gpt_fixture.h"

using lmf::Tensor;
using lmf::nn::GPT;
using lmf::nn::GPTConfig;

namespace {

GPTConfig tiny_config() { return lmf_test::tiny_gpt_config(); }

Tensor tokens(const std::vector<int32_t>& values, int64_t B, int64_t T) {
  return Tensor::from_vector(values, {B, T});
}

double stddev(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  double sum = 0, sq = 0;
  for (float x : v) sum += x, sq += double(x) * x;
  const double mean = sum / v.size();
  return std::sqrt(sq / v.size() - mean * mean);
}

}  // namespace

TEST_CASE("GPT parameters carry Hugging Face GPT-2 names and (out, in) shapes in a stable order") {
  GPT model(tiny_config(), 1);
  std::vector<std::string> expected = {"wte.weight", "wpe.weight"};
  for (int i = 0; i < 2; ++i) {
    const std::string h = "h." + std::to_string(i) + ".";
    for (const char* s : {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                          "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                          "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
                          "mlp.c_proj.bias"})
      expected.push_back(h + s);
  }
  expected.push_back("ln_f.weight");
  expected.push_back("ln_f.bias");
  std::vector<std::string> names;
  for (const auto& [name, t] : model.named_parameters()) names.push_back(name);
  CHECK(names == expected);
  CHECK(model.parameter("wte.weight").shape() == lmf::Shape{31, 16});
  CHECK(model.parameter("wpe.weight").shape() == lmf::Shape{8, 16});
  CHECK(model.parameter("h.0.attn.c_attn.weight").shape() == lmf::Shape{48, 16});
  CHECK(model.parameter("h.1.mlp.c_fc.weight").shape() == lmf::Shape{64, 16});
  CHECK(model.parameter("h.1.mlp.c_proj.weight").shape() == lmf::Shape{16, 64});
  CHECK_FALSE(model.has_parameter("lm_head.weight"));
  CHECK(model.num_parameters() == 31 * 16 + 8 * 16 + 2 * (4 * 16 + 48 * 17 + 16 * 17 + 64 * 17 + 16 * 65) + 2 * 16);
  CHECK(model.num_parameters(false) == model.num_parameters() - 8 * 16);
}

TEST_CASE("GPT without bias has no bias parameters") {
  GPTConfig c = tiny_config();
  c.bias = false;
  GPT model(c, 1);
  for (const auto& [name, t] : model.named_parameters()) CHECK(name.find("bias") == std::string::npos);
  Tensor logits = model.forward(tokens({1, 2, 3, 4}, 1, 4));
  CHECK(logits.shape() == lmf::Shape{1, 4, 31});
}

TEST_CASE("GPT initialisation follows GPT-2: N(0, 0.02), scaled residual projections, zero biases, unit gains") {
  GPTConfig c;
  c.n_layer = 4;
  c.n_head = 4;
  c.n_embd = 64;
  c.block_size = 64;
  c.vocab_size = 512;
  GPT model(c, 7);
  CHECK(stddev(model.parameter("wte.weight")) == Approx(0.02).epsilon(0.05));
  CHECK(stddev(model.parameter("wpe.weight")) == Approx(0.02).epsilon(0.05));
  CHECK(stddev(model.parameter("h.0.attn.c_attn.weight")) == Approx(0.02).epsilon(0.05));
  CHECK(stddev(model.parameter("h.3.mlp.c_fc.weight")) == Approx(0.02).epsilon(0.05));
  const double residual = 0.02 / std::sqrt(2.0 * 4);
  CHECK(stddev(model.parameter("h.2.attn.c_proj.weight")) == Approx(residual).epsilon(0.05));
  CHECK(stddev(model.parameter("h.1.mlp.c_proj.weight")) == Approx(residual).epsilon(0.05));
  for (float v : model.parameter("h.0.attn.c_attn.bias").to_vector()) CHECK(v == 0.f);
  for (float v : model.parameter("h.3.ln_2.weight").to_vector()) CHECK(v == 1.f);
  for (float v : model.parameter("ln_f.bias").to_vector()) CHECK(v == 0.f);
}

TEST_CASE("GPT initialisation is reproducible from the seed") {
  GPT a(tiny_config(), 5), b(tiny_config(), 5), c(tiny_config(), 6);
  CHECK(a.param_slab().to_vector() == b.param_slab().to_vector());
  CHECK(a.param_slab().to_vector() != c.param_slab().to_vector());
}

TEST_CASE("GPT forward and backward match the PyTorch reference") {
  const nlohmann::json fx = lmf_test::load_fixture("gpt_forward.json");
  GPT model(lmf_test::config_from_json(fx.at("config")), 0);
  model.load_state_dict(lmf_test::state_from_json(fx.at("params")));
  const Tensor ids = lmf_test::ids_from_json(fx.at("ids"));
  const Tensor targets = lmf_test::ids_from_json(fx.at("targets"));

  GPT::Output out = model.forward(ids, targets, fx.at("ignore_index").get<int32_t>());
  // Tolerances: tests/reference/README.md ("GPT and AdamW fixtures").
  CHECK(lmf_test::scaled_max_error(out.logits, fx.at("logits")) < 1e-5);
  CHECK(out.loss.item() == Approx(fx.at("loss").get<double>()).epsilon(1e-6));

  out.loss.backward();
  for (const auto& [name, t] : model.named_parameters()) {
    INFO(name);
    CHECK(lmf_test::scaled_max_error(t.grad(), fx.at("grads").at(name)) < 2e-5);
  }
  // Positions past T receive no gradient at all.
  const std::vector<float> wpe_grad = model.parameter("wpe.weight").grad().to_vector();
  for (std::size_t i = 7 * 16; i < wpe_grad.size(); ++i) CHECK(wpe_grad[i] == 0.f);
}

TEST_CASE("GPT forward without targets returns the same logits") {
  const nlohmann::json fx = lmf_test::load_fixture("gpt_forward.json");
  GPT model(lmf_test::config_from_json(fx.at("config")), 0);
  model.load_state_dict(lmf_test::state_from_json(fx.at("params")));
  lmf::NoGradGuard no_grad;
  Tensor logits = model.forward(lmf_test::ids_from_json(fx.at("ids")));
  CHECK_FALSE(logits.requires_grad());
  CHECK(lmf_test::scaled_max_error(logits, fx.at("logits")) < 1e-5);
}

TEST_CASE("GPT rejects bad inputs with clear errors") {
  GPT model(tiny_config(), 1);
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(model.forward(tokens(std::vector<int32_t>(9, 1), 1, 9)),
                    Contains("sequence length 9") && Contains("block_size = 8"));
  CHECK_THROWS_WITH(model.forward(tokens({1, 2, 31, 4}, 2, 2)),
                    Contains("token id 31 at (1, 0)") && Contains("[0, 31)"));
  CHECK_THROWS_WITH(model.forward(tokens({1, -1}, 1, 2)), Contains("token id -1"));
  CHECK_THROWS_WITH(model.forward(Tensor::from_vector(std::vector<int32_t>{1, 2}, {2})),
                    Contains("(B, T)"));
  CHECK_THROWS_WITH(model.forward(Tensor::zeros({1, 2})), Contains("i32 or u16"));
  CHECK_THROWS_WITH(model.forward(tokens({1, 2}, 1, 2), tokens({1, 2, 3}, 1, 3)),
                    Contains("targets of shape (1, 3)"));
  GPTConfig bad = tiny_config();
  bad.n_head = 3;
  CHECK_THROWS_WITH(GPT(bad), Contains("divisible"));
}

TEST_CASE("GPT accepts u16 token ids") {
  GPT model(tiny_config(), 1);
  lmf::NoGradGuard no_grad;
  Tensor a = model.forward(tokens({3, 1, 4, 1}, 1, 4));
  Tensor b = model.forward(tokens({3, 1, 4, 1}, 1, 4).to(lmf::DType::u16));
  CHECK(a.to_vector() == b.to_vector());
}

TEST_CASE("GPT dropout is active in training mode only") {
  GPTConfig c = tiny_config();
  c.dropout = 0.5f;
  GPT model(c, 3);
  GPT plain(tiny_config(), 3);  // same weights: dropout draws use their own generator
  CHECK(model.param_slab().to_vector() == plain.param_slab().to_vector());
  lmf::NoGradGuard no_grad;
  const Tensor ids = tokens({1, 2, 3, 4, 5, 6}, 2, 3);
  model.eval();
  CHECK_FALSE(model.block(0).attn().is_training());
  CHECK(model.forward(ids).to_vector() == plain.forward(ids).to_vector());
  model.train();
  CHECK(model.block(1).mlp().is_training());
  const auto before = model.dropout_generator().state();
  CHECK(model.forward(ids).to_vector() != plain.forward(ids).to_vector());
  CHECK(model.dropout_generator().state().offset > before.offset);
}

TEST_CASE("two backward calls accumulate twice the gradient of one") {
  GPT model(tiny_config(), 2);
  const Tensor ids = tokens({1, 5, 9, 2, 7, 3}, 2, 3), targets = tokens({5, 9, 2, 7, 3, 1}, 2, 3);
  model.forward(ids, targets).loss.backward();
  const std::vector<float> once = model.grad_slab().to_vector();
  model.zero_grad();
  for (float v : model.grad_slab().to_vector()) REQUIRE(v == 0.f);
  model.forward(ids, targets).loss.backward();
  model.forward(ids, targets).loss.backward();
  const std::vector<float> twice = model.grad_slab().to_vector();
  double max_err = 0, max_abs = 0;
  for (std::size_t i = 0; i < once.size(); ++i) {
    max_err = std::max(max_err, std::abs(double(twice[i]) - 2.0 * once[i]));
    max_abs = std::max(max_abs, std::abs(double(once[i])));
  }
  CHECK(max_abs > 0);
  CHECK(max_err <= 1e-6 * max_abs);
}

TEST_CASE("frozen parameters receive no gradient and are not updated") {
  GPT model(tiny_config(), 2);
  CHECK(model.freeze("h.0") == 12);
  CHECK(model.freeze("wpe") == 1);
  lmf::optim::AdamW opt(model, {.lr = 1e-2f});
  const std::vector<float> frozen_before = model.parameter("h.0.attn.c_attn.weight").to_vector();
  const std::vector<float> trained_before = model.parameter("h.1.attn.c_attn.weight").to_vector();
  model.forward(tokens({1, 2, 3, 4}, 1, 4), tokens({2, 3, 4, 5}, 1, 4)).loss.backward();
  for (float v : model.parameter("h.0.attn.c_attn.weight").grad().to_vector()) CHECK(v == 0.f);
  for (float v : model.parameter("wpe.weight").grad().to_vector()) CHECK(v == 0.f);
  opt.step();
  CHECK(model.parameter("h.0.attn.c_attn.weight").to_vector() == frozen_before);
  CHECK(model.parameter("h.1.attn.c_attn.weight").to_vector() != trained_before);
  CHECK_THROWS_WITH(model.freeze("h.9"), Catch::Matchers::Contains("no parameter matches 'h.9'"));
  CHECK(model.unfreeze() == static_cast<int64_t>(model.named_parameters().size()));
}

TEST_CASE("GPT overfits a fixed batch in 30 AdamW steps") {
  GPT model(tiny_config(), 11);
  lmf::optim::AdamW opt(model, {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .weight_decay = 0.1f});
  const Tensor ids = tokens({1, 5, 9, 2, 7, 3, 8, 0, 4, 6, 10, 12, 14, 16, 18, 20}, 2, 8);
  const Tensor targets = tokens({5, 9, 2, 7, 3, 8, 0, 4, 6, 10, 12, 14, 16, 18, 20, 22}, 2, 8);
  float first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    model.zero_grad();
    Tensor loss = model.forward(ids, targets).loss;
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item();
  }
  CHECK(first == Approx(std::log(31.0)).epsilon(0.05));  // near-uniform predictions at init
  CHECK(last < 0.25f * first);
}

TEST_CASE("GPT forward with a KV cache gives the uncached logits at every position, chunk by chunk") {
  GPT gpt(tiny_config(), 21);
  gpt.eval();
  const int64_t B = 2, T = 8, V = 31;
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < B * T; ++i) ids.push_back(static_cast<int32_t>((i * 7 + 3) % V));
  lmf::NoGradGuard no_grad;
  const auto full = gpt.forward(tokens(ids, B, T)).to_vector();  // (B, T, V)
  auto cache = gpt.make_cache(B);
  int64_t start = 0;
  for (int64_t len : {3, 1, 4}) {  // a prefill, one token, then a chunk
    std::vector<int32_t> chunk;
    for (int64_t b = 0; b < B; ++b)
      chunk.insert(chunk.end(), ids.begin() + b * T + start, ids.begin() + b * T + start + len);
    const auto got = gpt.forward(tokens(chunk, B, len), &cache).to_vector();  // (B, len, V)
    CHECK(cache.length() == start + len);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < len; ++t)
        for (int64_t v = 0; v < V; ++v)
          CHECK(got[(b * len + t) * V + v] == Approx(full[(b * T + start + t) * V + v]).margin(1e-5));
    start += len;
  }
}

TEST_CASE("GPT forward with a KV cache refuses a graph, an overflow and a mismatched cache, leaving it unchanged") {
  GPT gpt(tiny_config(), 22);
  auto cache = gpt.make_cache(1);
  CHECK_THROWS_WITH(gpt.forward(tokens({1, 2}, 1, 2), &cache), Catch::Contains("NoGradGuard"));
  lmf::NoGradGuard no_grad;
  gpt.forward(tokens({1, 2, 3}, 1, 3), &cache);
  CHECK_THROWS_WITH(gpt.forward(tokens(std::vector<int32_t>(6, 1), 1, 6), &cache), Catch::Contains("capacity"));
  CHECK_THROWS_WITH(gpt.forward(tokens({1, 2}, 2, 1), &cache), Catch::Contains("batch"));
  CHECK(cache.length() == 3);
  CHECK_THROWS_WITH(gpt.make_cache(1, 9), Catch::Contains("block_size"));
}
