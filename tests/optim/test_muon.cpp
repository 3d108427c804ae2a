// Muon: the update on tall, wide and square matrices against a double-precision transcription of
// modded-nanogpt's Muon written here (momentum, Nesterov, Newton–Schulz, shape scale, decay), the
// state round trip being bit-exact, AdamW leaving Muon's matrices alone, and clear errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "lmforge/nn/llama.h"
#include "lmforge/nn/lora.h"
#include "lmforge/nn/module.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/ops.h"
#include "lmforge/optim/muon.h"

using Catch::Matchers::Contains;
using lmf::Tensor;
using lmf::optim::Muon;
using lmf::optim::MuonConfig;

namespace {

struct Shape2 {
  const char* name;
  int64_t rows, cols;
};
const std::vector<Shape2> kShapes = {{"tall", 24, 6}, {"wide", 5, 17}, {"square", 9, 9}};

class Matrices : public lmf::nn::Module {
 public:
  Matrices() {
    for (const auto& s : kShapes) {
      std::vector<float> v(static_cast<std::size_t>(s.rows * s.cols));
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.1f * std::cos(0.7f * float(i) + float(s.rows));
      register_parameter(s.name, Tensor::from_vector(v, {s.rows, s.cols}));
    }
    register_parameter("bias", Tensor::from_vector(std::vector<float>(9, 0.5f), {9}));
  }
  Tensor param(const std::string& name) const {
    for (const auto& [n, p] : named_parameters())
      if (n == name) return p;
    return Tensor();
  }
};

// Deterministic pseudo-random gradients (full rank: a low-rank gradient's zero singular values
// are rounding noise that Newton–Schulz amplifies by a^5 in any precision but the reference's),
// different at every step and for every matrix.
std::vector<float> gradient_values(int64_t n, int step, int which) {
  uint64_t state = 0x9E3779B97F4A7C15ull * uint64_t(1 + step) + 0xD1B54A32D192ED03ull * uint64_t(1 + which);
  std::vector<float> g(static_cast<std::size_t>(n));
  for (auto& v : g) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v = float((state >> 40) & 0xFFFFFF) / float(1 << 23) - 1.f + 0.1f;  // [-0.9, 1.1)
  }
  return g;
}

void set_grads(Matrices& model, int step) {
  int which = 0;
  for (const auto& s : kShapes) {
    Tensor g = model.param(s.name).grad();
    g.copy_(Tensor::from_vector(gradient_values(s.rows * s.cols, step, which++), {s.rows, s.cols}));
  }
  model.param("bias").grad().copy_(Tensor::from_vector(gradient_values(9, step, 7), {9}));
}

// --- the double reference --------------------------------------------------------------------

using Mat = std::vector<double>;  // row-major

Mat matmul(const Mat& a, const Mat& b, int64_t n, int64_t k, int64_t m, bool trans_b) {
  Mat c(static_cast<std::size_t>(n * m), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) {
      double s = 0;
      for (int64_t l = 0; l < k; ++l) s += a[i * k + l] * (trans_b ? b[j * k + l] : b[l * m + j]);
      c[i * m + j] = s;
    }
  return c;
}

Mat transposed(const Mat& a, int64_t rows, int64_t cols) {
  Mat t(a.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = a[i * cols + j];
  return t;
}

Mat reference_newton_schulz(Mat g, int64_t rows, int64_t cols, int steps) {
  const bool tall = rows > cols;
  if (tall) g = transposed(g, rows, cols), std::swap(rows, cols);
  double norm = 0;
  for (double v : g) norm += v * v;
  norm = std::sqrt(norm) + 1e-7;
  for (double& v : g) v /= norm;
  for (int s = 0; s < steps; ++s) {
    const Mat A = matmul(g, g, rows, cols, rows, true);
    const Mat AA = matmul(A, A, rows, rows, rows, false);
    Mat B(A.size());
    for (std::size_t i = 0; i < A.size(); ++i) B[i] = -4.7750 * A[i] + 2.0315 * AA[i];
    const Mat BX = matmul(B, g, rows, rows, cols, false);
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = 3.4445 * g[i] + BX[i];
  }
  return tall ? transposed(g, rows, cols) : g;
}

struct ReferenceMatrix {
  int64_t rows, cols;
  Mat p, buffer;
  void step(const std::vector<float>& g, const MuonConfig& c) {
    const double mu = c.momentum;
    Mat update(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) {
      buffer[i] = mu * buffer[i] + (1 - mu) * double(g[i]);
      update[i] = c.nesterov ? (1 - mu) * double(g[i]) + mu * buffer[i] : buffer[i];
    }
    const Mat o = reference_newton_schulz(update, rows, cols, c.ns_steps);
    const double s = std::sqrt(std::max(1.0, double(rows) / double(cols)));
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1.0 - double(c.lr) * double(c.weight_decay);
      p[i] -= double(c.lr) * s * o[i];
    }
  }
};

std::vector<double> as_double(const Tensor& t) {
  std::vector<double> out;
  for (float v : t.to_vector()) out.push_back(v);
  return out;
}

// max |a - b| relative to max |b|.
double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

std::vector<std::string> matrix_names() { return {"tall", "wide", "square"}; }

}  // namespace

TEST_CASE("newton_schulz matches a double reference on tall, wide and square matrices") {
  int which = 0;
  for (const auto& s : kShapes) {
    const auto g = gradient_values(s.rows * s.cols, 3, which++);
    const Tensor out = lmf::optim::newton_schulz(Tensor::from_vector(g, {s.rows, s.cols}), 5);
    REQUIRE(out.shape() == lmf::Shape{s.rows, s.cols});
    const Mat expected = reference_newton_schulz(Mat(g.begin(), g.end()), s.rows, s.cols, 5);
    INFO(s.name);
    CHECK(relative_error(as_double(out), expected) < 1e-5);
  }
}

TEST_CASE("Muon steps follow a double reference of modded-nanogpt's Muon to 1e-5 relative") {
  for (const bool nesterov : {true, false}) {
    const MuonConfig config{.lr = 0.05f, .momentum = 0.9f, .nesterov = nesterov, .weight_decay = 0.3f, .ns_steps = 5};
    Matrices model;
    Muon muon(model, config, matrix_names());
    std::vector<ReferenceMatrix> reference;
    std::vector<std::vector<double>> initial;
    for (const auto& s : kShapes) {
      initial.push_back(as_double(model.param(s.name)));
      reference.push_back({s.rows, s.cols, initial.back(), Mat(initial.back().size(), 0.0)});
    }
    const auto bias_before = model.param("bias").to_vector();
    for (int step = 0; step < 4; ++step) {
      set_grads(model, step);
      muon.step();
      for (std::size_t w = 0; w < kShapes.size(); ++w)
        reference[w].step(gradient_values(kShapes[w].rows * kShapes[w].cols, step, int(w)), config);
    }
    CHECK(muon.step_count() == 4);
    const auto state = muon.state();
    REQUIRE(state.momentum.size() == 3);
    for (std::size_t w = 0; w < kShapes.size(); ++w) {
      INFO(kShapes[w].name << " nesterov " << nesterov);
      // The change over four steps, so that the comparison is not diluted by the initial values.
      std::vector<double> change = as_double(model.param(kShapes[w].name)), expected_change = reference[w].p;
      for (std::size_t i = 0; i < change.size(); ++i) change[i] -= initial[w][i], expected_change[i] -= initial[w][i];
      CHECK(relative_error(change, expected_change) < 1e-5);
      CHECK(relative_error(as_double(state.momentum[w].second), reference[w].buffer) < 1e-6);
    }
    CHECK(model.param("bias").to_vector() == bias_before);  // not Muon's
  }
}

TEST_CASE("Muon: the scale for a tall matrix is sqrt(rows / cols), and an orthogonalised update has unit-ish spectrum") {
  // One step from zero momentum with μ = 0: the update is lr·sqrt(24/6)·NS(G); NS(G) has singular
  // values in about [0.7, 1.2] (Keller Jordan's coefficients), so its Frobenius norm² / 6 is there.
  Matrices model;
  Muon muon(model, {.lr = 1.f, .momentum = 0.f, .nesterov = false, .weight_decay = 0.f, .ns_steps = 5}, {"tall"});
  const auto before = as_double(model.param("tall"));
  set_grads(model, 0);
  muon.step();
  const auto after = as_double(model.param("tall"));
  double sq = 0;
  for (std::size_t i = 0; i < after.size(); ++i) sq += (before[i] - after[i]) * (before[i] - after[i]);
  const double mean_singular_sq = sq / 4.0 / 6.0;  // divide out sqrt(4)² and the 6 singular values
  CHECK(mean_singular_sq > 0.5);
  CHECK(mean_singular_sq < 1.5);
}

TEST_CASE("Muon state round trip resumes bit-exactly") {
  const MuonConfig config{.lr = 0.05f, .momentum = 0.95f, .nesterov = true, .weight_decay = 0.1f, .ns_steps = 5};
  Matrices straight, resumed;
  Muon a(straight, config, matrix_names());
  for (int step = 0; step < 2; ++step) set_grads(straight, step), a.step();
  // Copy the weights and the state into a fresh model and optimizer, then both continue.
  for (const auto& name : matrix_names()) resumed.param(name).copy_(straight.param(name));
  Muon b(resumed, config, matrix_names());
  auto state = a.state();
  for (auto& [name, t] : state.momentum) t = t.clone();
  b.load_state(state);
  CHECK(b.step_count() == 2);
  for (int step = 2; step < 4; ++step) {
    set_grads(straight, step), a.step();
    set_grads(resumed, step), b.step();
  }
  for (const auto& name : matrix_names()) CHECK(straight.param(name).to_vector() == resumed.param(name).to_vector());
}

TEST_CASE("AdamW built with Muon's names as exclusions trains only the rest") {
  Matrices model;
  lmf::optim::AdamW adamw(model, {.lr = 0.1f}, matrix_names());
  const auto tall_before = model.param("tall").to_vector();
  const auto bias_before = model.param("bias").to_vector();
  set_grads(model, 0);
  adamw.step();
  CHECK(model.param("tall").to_vector() == tall_before);
  CHECK(model.param("bias").to_vector() != bias_before);
  const auto state = adamw.state();
  for (const auto& [name, m] : state.exp_avg)
    if (name == "tall") CHECK(m.to_vector() == std::vector<float>(m.numel(), 0.f));
}

TEST_CASE("Muon refuses vectors, unknown names, bad settings and mismatched state") {
  Matrices model;
  CHECK_THROWS_WITH(Muon(model, {}, {"bias"}), Contains("'bias'") && Contains("2-D"));
  CHECK_THROWS_WITH(Muon(model, {}, {"nope"}), Contains("no parameter 'nope'"));
  CHECK_THROWS_WITH(Muon(model, {.momentum = 1.f}, {"tall"}), Contains("training.muon_momentum"));
  CHECK_THROWS_WITH(Muon(model, {.ns_steps = 0}, {"tall"}), Contains("training.muon_ns_steps"));
  CHECK_THROWS_WITH(lmf::optim::AdamW(model, {}, {"nope"}), Contains("'nope'"));
  Muon muon(model, {}, {"tall", "wide"});
  Muon::State bad;
  bad.momentum = {{"tall", Tensor::zeros({24, 6})}, {"wide", Tensor::zeros({17, 5})}};
  CHECK_THROWS_WITH(muon.load_state(bad), Contains("'wide'") && Contains("(17, 5)"));
  bad.momentum = {{"tall", Tensor::zeros({24, 6})}};
  CHECK_THROWS_WITH(muon.load_state(bad), Contains("1 momentum buffers"));
}

TEST_CASE("muon_parameter_names: the layers' projections, not embeddings, head, norms, biases or LoRA") {
  lmf::nn::LlamaConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 16;
  c.qkv_bias = true;
  lmf::nn::Llama model(c, 3);
  std::vector<std::string> expected;
  for (int layer = 0; layer < 2; ++layer)
    for (const char* p : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
      expected.push_back("model.layers." + std::to_string(layer) + "." + p + ".weight");
  auto names = lmf::optim::muon_parameter_names(model);
  std::sort(names.begin(), names.end());
  std::sort(expected.begin(), expected.end());
  CHECK(names == expected);
  // With adapters the base is frozen and the adapters go to AdamW: nothing is left for Muon.
  lmf::nn::add_lora(model, {.rank = 2, .alpha = 4.f, .dropout = 0.f, .targets = model.lora_target_names(), .seed = 1});
  CHECK(lmf::optim::muon_parameter_names(model).empty());
}

TEST_CASE("Muon::step(scale) is bit-identical to scaling the gradients first") {
  const MuonConfig config{.lr = 0.05f, .momentum = 0.95f, .nesterov = true, .weight_decay = 0.1f, .ns_steps = 5};
  Matrices in_place, folded;
  Muon a(in_place, config, matrix_names()), b(folded, config, matrix_names());
  const float scale = 0.37f;
  for (int step = 0; step < 3; ++step) {
    set_grads(in_place, step);
    for (const auto& name : matrix_names()) {
      Tensor g = in_place.param(name).grad();
      lmf::scale_(g, scale);
    }
    a.step();
    set_grads(folded, step);
    b.step(scale);
  }
  for (const auto& name : matrix_names()) CHECK(in_place.param(name).to_vector() == folded.param(name).to_vector());
}
