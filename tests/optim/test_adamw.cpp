// AdamW: the update rule against a double-precision transcription of torch.optim.AdamW, decay only
// on >= 2-D tensors, frozen parameters skipped, state save/restore, clear errors, and three steps
// of clip + AdamW on the GPT fixture against PyTorch.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/nn/linear.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/optim/clip.h"
#include "nn/gpt_fixture.h"

using Catch::Matchers::Contains;
using lmf::Tensor;
using lmf::optim::AdamW;
using lmf::optim::AdamWConfig;

namespace {

const AdamWConfig kConfig{.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.5f};

// torch.optim.AdamW (single-tensor path), in double, for one tensor.
struct Reference {
  std::vector<double> p, m, v;
  void step(const std::vector<float>& g, int t, double wd, const AdamWConfig& c) {
    m.resize(p.size());
    v.resize(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1.0 - double(c.lr) * wd;
      m[i] = double(c.beta1) * m[i] + (1 - double(c.beta1)) * g[i];
      v[i] = double(c.beta2) * v[i] + (1 - double(c.beta2)) * double(g[i]) * g[i];
      const double bc1 = 1 - std::pow(double(c.beta1), t), bc2 = 1 - std::pow(double(c.beta2), t);
      p[i] -= double(c.lr) / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + double(c.eps));
    }
  }
};

std::vector<double> as_double(const Tensor& t) {
  std::vector<double> out;
  for (float v : t.to_vector()) out.push_back(v);
  return out;
}

void set_grads(lmf::nn::Linear& layer, int step) {
  Tensor gw = layer.weight().grad(), gb = layer.bias().grad();
  std::vector<float> w(6), b(2);
  for (int i = 0; i < 6; ++i) w[i] = std::sin(1.0f + i + 7.f * step);
  for (int i = 0; i < 2; ++i) b[i] = 0.3f * std::cos(2.0f + i + 5.f * step);
  gw.copy_(Tensor::from_vector(w, {2, 3}));
  gb.copy_(Tensor::from_vector(b, {2}));
}

void check_close(const Tensor& actual, const std::vector<double>& expected) {
  const std::vector<float> a = actual.to_vector();
  REQUIRE(a.size() == expected.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == Approx(expected[i]).epsilon(1e-5).margin(1e-7));
}

}  // namespace

TEST_CASE("AdamW follows torch.optim.AdamW with weight decay on matrices only") {
  lmf::Generator gen(3);
  lmf::nn::Linear layer(3, 2, true, gen, 0.5f);
  layer.flatten_parameters();
  AdamW opt(layer, kConfig);
  CHECK(opt.decays(0));        // weight (2, 3)
  CHECK_FALSE(opt.decays(1));  // bias (2)
  Reference w{as_double(layer.weight()), {}, {}}, b{as_double(layer.bias()), {}, {}};
  for (int t = 1; t <= 3; ++t) {
    set_grads(layer, t);
    w.step(layer.weight().grad().to_vector(), t, kConfig.weight_decay, kConfig);
    b.step(layer.bias().grad().to_vector(), t, 0.0, kConfig);
    opt.step();
    CHECK(opt.step_count() == t);
    check_close(layer.weight(), w.p);
    check_close(layer.bias(), b.p);
  }
  const AdamW::State s = opt.state();
  check_close(s.exp_avg[0].second, w.m);
  check_close(s.exp_avg_sq[1].second, b.v);
}

TEST_CASE("AdamW skips frozen parameters entirely") {
  lmf::Generator gen(3);
  lmf::nn::Linear layer(3, 2, true, gen);
  layer.flatten_parameters();
  layer.freeze("bias");
  AdamW opt(layer, kConfig);
  const std::vector<float> bias = layer.bias().to_vector();
  set_grads(layer, 1);
  opt.step();
  CHECK(layer.bias().to_vector() == bias);
  for (float v : opt.state().exp_avg[1].second.to_vector()) CHECK(v == 0.f);
}

TEST_CASE("AdamW follows freezing changes made between steps") {
  lmf::Generator gen(3);
  lmf::nn::Linear layer(3, 2, true, gen);
  layer.flatten_parameters();
  AdamW opt(layer, kConfig);
  set_grads(layer, 1);
  opt.step();
  layer.freeze("weight");  // a frozen entry before a trainable one
  const std::vector<float> weight = layer.weight().to_vector();
  const std::vector<float> bias = layer.bias().to_vector();
  opt.step();
  CHECK(layer.weight().to_vector() == weight);
  CHECK(layer.bias().to_vector() != bias);
  layer.unfreeze();
  opt.step();
  CHECK(layer.weight().to_vector() != weight);
}

TEST_CASE("AdamW state restored into a fresh optimizer continues identically") {
  lmf::Generator gen_a(3), gen_b(4);
  lmf::nn::Linear a(3, 2, true, gen_a), b(3, 2, true, gen_b);
  a.flatten_parameters();
  b.flatten_parameters();
  AdamW opt_a(a, kConfig);
  for (int t = 1; t <= 2; ++t) {
    set_grads(a, t);
    opt_a.step();
  }
  AdamW opt_b(b, kConfig);
  b.load_state_dict(a.state_dict());
  AdamW::State saved = opt_a.state();
  for (auto* dict : {&saved.exp_avg, &saved.exp_avg_sq})
    for (auto& [name, t] : *dict) t = t.clone();  // as a checkpoint would hold them
  opt_b.load_state(saved);
  CHECK(opt_b.step_count() == 2);
  set_grads(a, 3);
  set_grads(b, 3);
  opt_a.step();
  opt_b.step();
  CHECK(a.param_slab().to_vector() == b.param_slab().to_vector());
  CHECK(opt_a.exp_avg_sq_slab().to_vector() == opt_b.exp_avg_sq_slab().to_vector());
}

TEST_CASE("AdamW reports bad state, bad config and moved parameters clearly") {
  lmf::Generator gen(3);
  lmf::nn::Linear layer(3, 2, true, gen);
  CHECK_FALSE(layer.is_flattened());
  AdamW opt(layer, kConfig);  // the slab is built on first use
  CHECK(layer.is_flattened());
  AdamW::State s = opt.state();
  s.exp_avg[1].second = Tensor::zeros({3});
  CHECK_THROWS_WITH(opt.load_state(s), Contains("exp_avg 'bias' has shape (3)"));
  s = opt.state();
  s.exp_avg_sq[0].first = "weights";
  CHECK_THROWS_WITH(opt.load_state(s), Contains("exp_avg_sq has no entry for 'weight'"));
  AdamWConfig bad = kConfig;
  bad.beta2 = 1.f;
  CHECK_THROWS_WITH(AdamW(layer, bad), Contains("beta2"));
  layer.to(lmf::Device::cpu());
  CHECK_THROWS_WITH(opt.step(), Contains("build the optimizer again"));
}

TEST_CASE("three steps of clipping and AdamW on the GPT match PyTorch") {
  const nlohmann::json fx = lmf_test::load_fixture("gpt_forward.json");
  const nlohmann::json ref = lmf_test::load_fixture("gpt_adamw.json");
  lmf::nn::GPT model(lmf_test::config_from_json(fx.at("config")), 0);
  model.load_state_dict(lmf_test::state_from_json(fx.at("params")));
  const Tensor ids = lmf_test::ids_from_json(fx.at("ids"));
  const Tensor targets = lmf_test::ids_from_json(fx.at("targets"));
  AdamW opt(model, {.lr = ref.at("lr"), .beta1 = ref.at("beta1"), .beta2 = ref.at("beta2"),
                    .eps = ref.at("eps"), .weight_decay = ref.at("weight_decay")});
  const int steps = ref.at("steps");
  for (int step = 0; step < steps; ++step) {
    model.zero_grad();
    Tensor loss = model.forward(ids, targets, fx.at("ignore_index").get<int32_t>()).loss;
    loss.backward();
    const double norm = lmf::optim::clip_grad_norm(*model.slab(), ref.at("max_norm").get<double>());
    CHECK(loss.item() == Approx(ref.at("losses")[step].get<double>()).epsilon(1e-6));
    CHECK(norm == Approx(ref.at("grad_norms")[step].get<double>()).epsilon(1e-6));
    opt.step();
  }
  // Tolerances: tests/reference/README.md ("GPT and AdamW fixtures").
  const int64_t C = model.config().n_embd;
  for (const auto& [name, t] : model.named_parameters()) {
    INFO(name);
    const nlohmann::json& expected = ref.at("params_after").at(name);
    if (name.ends_with("attn.c_attn.bias")) {
      // The key bias has an analytically zero gradient; Adam turns its rounding noise into moves
      // of up to lr·|g|/(|g|+eps) per step, so it gets its own bound.
      const std::vector<float> a = t.to_vector();
      const std::vector<double> e = expected.at("data").get<std::vector<double>>();
      for (int64_t i = 0; i < 3 * C; ++i) {
        const bool key = i >= C && i < 2 * C;
        CHECK(std::abs(a[i] - e[i]) < (key ? steps * ref.at("lr").get<double>() : 1e-5));
      }
      continue;
    }
    CHECK(lmf_test::scaled_max_error(t, expected, /*floor=*/1.0) < 1e-5);  // error over max(1, max|p|)
  }
}

TEST_CASE("the clip factor folded into AdamW::step is bit-identical to clipping the slab first") {
  const nlohmann::json fx = lmf_test::load_fixture("gpt_forward.json");
  const Tensor ids = lmf_test::ids_from_json(fx.at("ids"));
  const Tensor targets = lmf_test::ids_from_json(fx.at("targets"));
  const auto config = lmf_test::config_from_json(fx.at("config"));
  lmf::nn::GPT in_place(config, 0), folded(config, 0);
  AdamW opt_in_place(in_place, {.lr = 1e-2f, .weight_decay = 0.1f});
  AdamW opt_folded(folded, {.lr = 1e-2f, .weight_decay = 0.1f});
  // 0.05 is far below these gradients' norm, so every step clips; 1e9 never does.
  for (const double max_norm : {0.05, 1e9}) {
    for (int step = 0; step < 3; ++step) {
      in_place.zero_grad();
      in_place.forward(ids, targets).loss.backward();
      const double norm = lmf::optim::clip_grad_norm(*in_place.slab(), max_norm);
      opt_in_place.step();

      folded.zero_grad();
      folded.forward(ids, targets).loss.backward();
      const double folded_norm = lmf::optim::grad_norm(*folded.slab());
      const float scale = lmf::optim::clip_factor(folded_norm, max_norm);
      CHECK(folded_norm == norm);
      CHECK((scale < 1.f) == (max_norm < 1.0));
      opt_folded.step(scale);
      REQUIRE(folded.param_slab().to_vector() == in_place.param_slab().to_vector());
    }
  }
  CHECK(lmf::optim::clip_factor(std::nan(""), 1.0) == 1.f);
  CHECK(lmf::optim::clip_factor(3.0, 0.0) == 1.f);
  CHECK(lmf::optim::clip_factor(3.0, 1.5) == Approx(1.5 / (3.0 + 1e-6)));
}
