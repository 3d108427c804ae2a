// LoRA adapters: a fresh adapter computes the base function, the adapter path's gradients match
// finite differences, only adapters train under AdamW, merging reproduces the adapted logits, and
// adapters survive a checkpoint round trip (with the base file left plain GPT-2).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "lmforge/autograd.h"
#include "lmforge/generate/generate.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/lora.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using lmf::Tensor;
using namespace lmf::nn;

namespace {

GPTConfig tiny_config() {
  GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.block_size = 8;
  c.vocab_size = 11;
  c.dropout = 0.f;
  return c;
}

Tensor tiny_ids() {
  return Tensor::from_vector(std::vector<int32_t>{1, 4, 2, 9, 0, 7, 3, 3, 5, 10, 6, 8}, {2, 6});
}

Tensor tiny_targets() {
  return Tensor::from_vector(std::vector<int32_t>{4, 2, 9, 0, 7, 3, 3, 5, 10, 6, 8, 1}, {2, 6});
}

bool is_lora_name(const std::string& name) {
  return name.find(".lora_A") != std::string::npos || name.find(".lora_B") != std::string::npos;
}

// Gives every B (and A) random values, so the adapters change the function.
void randomize_adapters(GPT& gpt, uint64_t seed) {
  lmf::Generator gen(seed);
  lmf::NoGradGuard no_grad;
  for (auto& [name, p] : gpt.named_parameters()) {
    if (!is_lora_name(name)) continue;
    Tensor dst = p;
    dst.copy_(Tensor::randn(p.shape(), gen, 0.f, 0.2f));
  }
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  float m = 0.f;
  for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

Tensor logits_of(const GPT& gpt) {
  lmf::NoGradGuard no_grad;
  return gpt.forward(tiny_ids()).contiguous_copy();
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("lmf_lora_" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("a fresh adapter (B = 0) leaves the model's output unchanged") {
  GPT gpt(tiny_config(), 5);
  const Tensor before = logits_of(gpt);
  add_lora(gpt, LoraOptions{4, 8.f, 0.f, lora_target_names(), 1});
  CHECK(has_lora(gpt));
  CHECK(bit_equal(logits_of(gpt), before));
  // A itself is not zero: the update direction exists, only its B factor starts at zero.
  CHECK(max_abs_diff(gpt.parameter("h.0.attn.c_attn.lora_A"), Tensor::zeros({4, 8})) > 0.f);
}

TEST_CASE(
    "add_lora names adapters after their layer, shapes them (r, IN)/(OUT, r) and freezes the "
    "base") {
  GPT gpt(tiny_config(), 5);
  const int64_t base_count = static_cast<int64_t>(gpt.named_parameters().size());
  add_lora(gpt, LoraOptions{3, 6.f, 0.f, {"mlp.c_fc", "attn.c_attn"}, 1});
  const int64_t C = 8;
  CHECK(gpt.parameter("h.1.attn.c_attn.lora_A").shape() == lmf::Shape{3, C});
  CHECK(gpt.parameter("h.1.attn.c_attn.lora_B").shape() == lmf::Shape{3 * C, 3});
  CHECK(gpt.parameter("h.0.mlp.c_fc.lora_A").shape() == lmf::Shape{3, C});
  CHECK(gpt.parameter("h.0.mlp.c_fc.lora_B").shape() == lmf::Shape{4 * C, 3});
  CHECK_FALSE(gpt.has_parameter("h.0.attn.c_proj.lora_A"));
  CHECK_FALSE(gpt.has_parameter("h.0.mlp.c_proj.lora_B"));
  int64_t adapters = 0;
  for (const auto& [name, p] : gpt.named_parameters()) {
    INFO(name);
    CHECK(p.requires_grad() == is_lora_name(name));
    adapters += is_lora_name(name);
  }
  CHECK(adapters == 2 * 2 * 2);  // 2 blocks x 2 targets x (A, B)
  CHECK(static_cast<int64_t>(gpt.named_parameters().size()) == base_count + adapters);
  // Re-flattened: every parameter, adapters included, lives in the current slab.
  CHECK(gpt.slab()->entries.size() == gpt.named_parameters().size());

  const auto options = lora_options(gpt);
  REQUIRE(options);
  CHECK(options->rank == 3);
  CHECK(options->alpha == 6.f);
  CHECK(options->targets == std::vector<std::string>{"attn.c_attn", "mlp.c_fc"});
  CHECK_THROWS_WITH(add_lora(gpt, LoraOptions{3, 6.f, 0.f, {"mlp.c_fc"}, 1}), Contains("already"));
}

TEST_CASE("invalid LoRA options are rejected with the field named") {
  GPT gpt(tiny_config(), 5);
  CHECK_THROWS_WITH(add_lora(gpt, LoraOptions{0, 8.f, 0.f, lora_target_names(), 0}),
                    Contains("rank"));
  CHECK_THROWS_WITH(add_lora(gpt, LoraOptions{2, 8.f, 1.f, lora_target_names(), 0}),
                    Contains("dropout"));
  CHECK_THROWS_WITH(add_lora(gpt, LoraOptions{2, 8.f, 0.f, {"attn.q"}, 0}), Contains("'attn.q'"));
  CHECK_THROWS_WITH(add_lora(gpt, LoraOptions{2, 8.f, 0.f, {"mlp.c_fc", "mlp.c_fc"}, 0}),
                    Contains("twice"));
  CHECK_FALSE(has_lora(gpt));
  CHECK_THROWS_WITH(merge_lora(gpt), Contains("no LoRA"));
}

TEST_CASE("adapter gradients match central finite differences of the loss") {
  GPT gpt(tiny_config(), 7);
  add_lora(gpt, LoraOptions{2, 3.f, 0.f, lora_target_names(), 2});
  randomize_adapters(gpt, 11);  // with B = 0 the gradient of A would be trivially zero
  gpt.zero_grad();
  gpt.forward(tiny_ids(), tiny_targets()).loss.backward();

  auto loss_value = [&] {
    lmf::NoGradGuard no_grad;
    return static_cast<double>(gpt.forward(tiny_ids(), tiny_targets()).loss.item());
  };
  // f32 loss: rounding of ~1e-7 relative over 2·eps dominates; eps 1e-2 keeps it near 1e-5 while
  // the second-order error of the central difference stays below that for these small weights.
  const float eps = 1e-2f;
  int checked = 0;
  for (const std::string name :
       {"h.0.attn.c_attn.lora_A", "h.0.attn.c_attn.lora_B", "h.1.mlp.c_proj.lora_A",
        "h.1.mlp.c_fc.lora_B", "h.0.attn.c_proj.lora_B"}) {
    Tensor p = gpt.parameter(name);
    const std::vector<float> grad = p.grad().to_vector();
    float* data = p.data<float>();
    for (int64_t i = 0; i < p.numel(); i += std::max<int64_t>(1, p.numel() / 6)) {
      const float saved = data[i];
      data[i] = saved + eps;
      const double up = loss_value();
      data[i] = saved - eps;
      const double down = loss_value();
      data[i] = saved;
      const double numeric = (up - down) / (2.0 * eps);
      INFO(name << "[" << i << "] analytic " << grad[i] << " numeric " << numeric);
      CHECK(std::abs(numeric - grad[i]) <= 2e-4 + 2e-2 * std::abs(numeric));
      ++checked;
    }
  }
  CHECK(checked >= 25);
}

TEST_CASE("only adapter parameters get gradients and change under AdamW") {
  GPT gpt(tiny_config(), 3);
  add_lora(gpt, LoraOptions{2, 4.f, 0.f, {"attn.c_attn", "mlp.c_proj"}, 4});
  StateDict before;
  for (const auto& [name, p] : gpt.named_parameters()) before.emplace_back(name, p.clone());
  lmf::optim::AdamW adamw(gpt, {.lr = 1e-2f, .weight_decay = 0.1f});
  float first_loss = 0.f, last_loss = 0.f;
  for (int step = 0; step < 5; ++step) {
    gpt.zero_grad();
    Tensor loss = gpt.forward(tiny_ids(), tiny_targets()).loss;
    (step == 0 ? first_loss : last_loss) = loss.item();
    loss.backward();
    if (step == 0) {
      for (const auto& [name, p] : gpt.named_parameters()) {
        if (is_lora_name(name)) continue;
        INFO(name);
        const Tensor g = p.grad();
        CHECK((!g.defined() || max_abs_diff(g, Tensor::zeros(p.shape())) == 0.f));
      }
      // B starts at zero, so the first gradient reaches B (and not yet A).
      CHECK(max_abs_diff(gpt.parameter("h.0.attn.c_attn.lora_B").grad(), Tensor::zeros({24, 2})) >
            0.f);
    }
    adamw.step();
  }
  CHECK(last_loss < first_loss);
  for (const auto& [name, old] : before) {
    INFO(name);
    if (is_lora_name(name))
      CHECK_FALSE(bit_equal(gpt.parameter(name), old));
    else
      CHECK(bit_equal(gpt.parameter(name), old));
  }
}

TEST_CASE("merge_lora folds the adapters into plain weights with the adapted logits") {
  GPT gpt(tiny_config(), 9);
  GPT plain(tiny_config(), 9);
  add_lora(gpt, LoraOptions{3, 5.f, 0.1f, lora_target_names(), 6});
  randomize_adapters(gpt, 12);
  gpt.eval();  // adapter dropout off: the merged model computes the evaluation-mode function
  const Tensor adapted = logits_of(gpt);
  REQUIRE(max_abs_diff(adapted, logits_of(plain)) > 1e-3f);  // the adapters matter

  // The expected merged weight, from the definition W + (alpha/r)·B·A computed here in double.
  const std::vector<float> W = gpt.parameter("h.1.mlp.c_fc.weight").to_vector();  // (4C, C)
  const std::vector<float> A = gpt.parameter("h.1.mlp.c_fc.lora_A").to_vector();  // (3, C)
  const std::vector<float> B = gpt.parameter("h.1.mlp.c_fc.lora_B").to_vector();  // (4C, 3)
  merge_lora(gpt);
  const std::vector<float> merged = gpt.parameter("h.1.mlp.c_fc.weight").to_vector();
  for (int64_t o = 0; o < 32; ++o)
    for (int64_t i = 0; i < 8; ++i) {
      double delta = 0;
      for (int64_t r = 0; r < 3; ++r) delta += double(B[o * 3 + r]) * double(A[r * 8 + i]);
      CHECK(std::abs(merged[o * 8 + i] - (W[o * 8 + i] + 5.0 / 3.0 * delta)) < 1e-6);
    }

  CHECK_FALSE(has_lora(gpt));
  CHECK(gpt.named_parameters().size() == plain.named_parameters().size());
  for (const auto& [name, p] : gpt.named_parameters()) {
    INFO(name);
    CHECK(p.requires_grad());
  }
  CHECK(max_abs_diff(logits_of(gpt), adapted) <= 1e-5f);
}

TEST_CASE("adapters round-trip through a checkpoint; model.safetensors keeps only the base") {
  TempDir tmp;
  GPT gpt(tiny_config(), 13);
  const Tensor base_c_attn = gpt.parameter("h.0.attn.c_attn.weight").clone();
  add_lora(gpt, LoraOptions{2, 4.f, 0.05f, {"attn.c_attn", "mlp.c_proj"}, 4});
  randomize_adapters(gpt, 14);
  gpt.eval();
  const fs::path dir = tmp.path / "ckpt";
  lmf::io::save_gpt(gpt, dir);
  REQUIRE(fs::exists(dir / lmf::io::kAdapterFile));
  REQUIRE(fs::exists(dir / lmf::io::kAdapterConfigFile));

  // The base file is plain GPT-2: no adapter tensors, Conv1D layout of the untouched base weight.
  const auto base_file = lmf::io::read_safetensors(dir / lmf::io::kModelFile);
  for (const auto& [name, t] : base_file.tensors) CHECK_FALSE(is_lora_name(name));
  const std::vector<float> stored =
      base_file.tensors.at("h.0.attn.c_attn.weight").to_vector();  // (C, 3C)
  const std::vector<float> base = base_c_attn.to_vector();         // (3C, C)
  bool same = true;
  for (int64_t o = 0; o < 24; ++o)
    for (int64_t i = 0; i < 8; ++i) same = same && stored[i * 24 + o] == base[o * 8 + i];
  CHECK(same);

  auto loaded = lmf::io::load_gpt(dir);
  REQUIRE(has_lora(*loaded));
  const auto options = lora_options(*loaded);
  CHECK(options->rank == 2);
  CHECK(options->alpha == 4.f);
  CHECK(options->dropout == 0.05f);
  CHECK(options->targets == std::vector<std::string>{"attn.c_attn", "mlp.c_proj"});
  for (const auto& [name, p] : gpt.named_parameters()) {
    INFO(name);
    CHECK(bit_equal(loaded->parameter(name), p));
    CHECK(loaded->parameter(name).requires_grad() == is_lora_name(name));
  }
  loaded->eval();
  CHECK(bit_equal(logits_of(*loaded), logits_of(gpt)));
}

TEST_CASE("damaged adapter files are errors naming the file") {
  TempDir tmp;
  GPT gpt(tiny_config(), 13);
  add_lora(gpt, LoraOptions{2, 4.f, 0.f, {"attn.c_attn"}, 4});
  const fs::path dir = tmp.path / "ckpt";
  lmf::io::save_gpt(gpt, dir);

  SECTION("a rank that disagrees with the tensors") {
    std::ofstream(dir / lmf::io::kAdapterConfigFile)
        << R"({"rank": 3, "alpha": 4, "dropout": 0, "targets": ["attn.c_attn"]})";
    CHECK_THROWS_WITH(lmf::io::load_gpt(dir),
                      Contains("adapters.safetensors") && Contains("h.0.attn.c_attn.lora_A"));
  }
  SECTION("a target without tensors") {
    std::ofstream(dir / lmf::io::kAdapterConfigFile)
        << R"({"rank": 2, "alpha": 4, "dropout": 0, "targets": ["attn.c_attn", "mlp.c_fc"]})";
    CHECK_THROWS_WITH(lmf::io::load_gpt(dir), Contains("missing tensor \"h.0.mlp.c_fc.lora_A\""));
  }
  SECTION("an unknown target") {
    std::ofstream(dir / lmf::io::kAdapterConfigFile)
        << R"({"rank": 2, "alpha": 4, "dropout": 0, "targets": ["attn.qkv"]})";
    CHECK_THROWS_WITH(lmf::io::load_gpt(dir),
                      Contains("adapter_config.json") && Contains("attn.qkv"));
  }
  SECTION("the tensors without their config") {
    fs::remove(dir / lmf::io::kAdapterConfigFile);
    CHECK_THROWS_WITH(lmf::io::load_gpt(dir), Contains("adapter_config.json: missing"));
  }
}

TEST_CASE("cached generation applies unmerged adapters: its logits equal the adapted full forward") {
  GPT gpt(tiny_config(), 13);
  add_lora(gpt, LoraOptions{2, 4.f, 0.f, {"attn.c_attn", "mlp.c_fc"}, 4});
  {  // lora_B starts at zero; make the adapters change the output
    lmf::NoGradGuard no_grad;
    lmf::Generator g(5);
    for (auto& [name, p] : gpt.named_parameters())
      if (name.find("lora_B") != std::string::npos) {
        Tensor dst = p;
        dst.copy_(Tensor::randn(p.shape(), g, 0.f, 0.5f));
      }
  }
  gpt.eval();
  const Tensor ids = tiny_ids().contiguous_copy();  // (B, T)
  lmf::NoGradGuard no_grad;
  const auto full = gpt.forward(ids).to_vector();  // (B, T, V)
  auto cache = gpt.make_cache(ids.size(0));
  const int64_t b = ids.size(0), t = ids.size(1), v = gpt.vocab_size();
  for (int64_t i = 0; i < t; ++i) {
    const auto step = lmf::generate::forward_step(gpt, cache, lmf::slice(ids, 1, i, i + 1).contiguous_copy()).to_vector();
    for (int64_t r = 0; r < b; ++r)
      for (int64_t j = 0; j < v; ++j) CHECK(step[r * v + j] == Approx(full[(r * t + i) * v + j]).margin(1e-4));
  }
  // The adapters matter: the base model (same seed, no adapters) gives other logits.
  const auto base = GPT(tiny_config(), 13).forward(ids).to_vector();
  double moved = 0;
  for (std::size_t i = 0; i < base.size(); ++i) moved = std::max(moved, double(std::abs(base[i] - full[i])));
  CHECK(moved > 1e-2);
}
