// run.precision: bf16 (mixed precision) on a tiny GPT and a tiny Llama: the losses track the f32
// run's within a bound built from a measured bf16 rounding budget, the checkpoints hold f32 master
// weights, and a stopped bf16 run resumes bit for bit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "e2e/cli_run.h"
#include "lmforge/core/compute.h"
#include "lmforge/core/rng.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/nn/causal_lm.h"
#include "lmforge/ops.h"
#include "lmforge/train/trainer.h"
#include "train/model_io.h"
#include "train/word_corpus.h"

namespace fs = std::filesystem;
using lmf::DType;
using lmf::Tensor;
using lmf::train::Callbacks;
using lmf::train::Config;
using lmf::train::Precision;
using lmf::train::StepMetrics;
using lmf::train::Trainer;

namespace {

fs::path fresh_dir(const std::string& name) { return lmf::test::work_dir("mixed_precision", name); }

const fs::path& corpus() {
  static const fs::path dir = lmf::test::prepare_char_corpus(fresh_dir("corpus"), lmf::test::generated_text(400, 17));
  return dir;
}

int64_t vocab_size() {
  return lmf::data::load_tokenizer((corpus() / "tokenizer.json").string())->vocab_size();
}

Config tiny_config(const std::string& name, bool llama, int64_t steps) {
  Config c = lmf::test::tiny_run_config(fresh_dir(name), corpus(), 7, steps);
  c.training.lr = 3e-3f;
  c.training.min_lr = 3e-4f;
  c.checkpoint.interval = 4;
  c.logging.interval = 1;
  if (llama) {
    c.model.arch = lmf::train::ModelArch::llama;
    c.model.n_head = 4;
    c.model.n_kv_head = 2;
  }
  c.validate();
  return c;
}

// A few batches of real tokens (B, T) from the start of the training shard (llm.c layout: a
// 256-int header, then uint16 ids), as inputs and next-token targets.
std::vector<std::pair<Tensor, Tensor>> batches(const Config& c, int count) {
  std::ifstream in(corpus() / "train.bin", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const int64_t header = 256 * 4, tokens = (static_cast<int64_t>(bytes.size()) - header) / 2;
  const int64_t b = c.training.batch_size, t = c.model.block_size;
  REQUIRE(tokens > count * b * (t + 1));
  const auto id = [&](int64_t i) {
    uint16_t x;
    std::memcpy(&x, bytes.data() + header + 2 * i, 2);
    return static_cast<int32_t>(x);
  };
  std::vector<std::pair<Tensor, Tensor>> out;
  for (int batch = 0; batch < count; ++batch) {
    std::vector<int32_t> ids, targets;
    for (int64_t s = 0; s < b; ++s) {
      const int64_t start = (batch * b + s) * (t + 1);
      for (int64_t i = 0; i < t; ++i) {
        ids.push_back(id(start + i));
        targets.push_back(id(start + i + 1));
      }
    }
    out.emplace_back(Tensor::from_vector(ids, {b, t}), Tensor::from_vector(targets, {b, t}));
  }
  return out;
}

// Batches the budgets take their maximum over: the sup over the batches a run may draw, estimated
// from 16 (4 x 16 sequences of 16 tokens, a fifth of the training shard).
constexpr int kBudgetBatches = 16;

// f32 loss of `model` on one batch.
double f32_loss(const lmf::nn::CausalLM& model, const std::pair<Tensor, Tensor>& batch) {
  lmf::NoGradGuard no_grad;
  return model.forward_with_loss(batch.first, batch.second).loss.item();
}

// Trains c from the seed's initial weights (rounded to bf16 first when round_init) and returns
// the per-step losses.
std::vector<float> train(Config c, Precision precision, bool round_init, const std::string& name) {
  c.run.precision = precision;
  c.run.out_dir = fresh_dir(name).string();
  auto model = lmf::train::detail::build_model(c.model, vocab_size(), c.run.seed);
  if (round_init) {
    lmf::NoGradGuard no_grad;
    Tensor slab = model->param_slab();
    slab.copy_(slab.to(DType::bf16));
  }
  std::vector<float> losses;
  Callbacks cb;
  cb.on_step = [&losses](const StepMetrics& m) {
    losses.push_back(m.train_loss);
    return true;
  };
  Trainer(c, std::move(model), cb).fit();
  return losses;
}

// The forward rounding budget: the largest |loss| change over a few batches at the initial weights
// from the whole mixed-precision forward (bf16 weight copies, activations and products) against the
// f32 forward at the same weights.
double forward_budget(const Config& c) {
  const auto model = lmf::train::detail::build_model(c.model, vocab_size(), c.run.seed);
  model->eval();
  lmf::ComputeOptions mixed;
  mixed.mixed_bf16 = true;
  mixed.cpu_matmul_bf16 = lmf::cpu_matmul_bf16_available();
  double budget = 0;
  for (const auto& batch : batches(c, kBudgetBatches)) {
    const double f32 = f32_loss(*model, batch);
    model->refresh_bf16_copies();
    const lmf::ComputeScope scope(mixed);
    budget = std::max(budget, std::fabs(f32_loss(*model, batch) - f32));
    model->clear_bf16_copies();
  }
  return budget;
}

// The update budget: the largest |loss| change, evaluated in f32 over the same batches, between
// the weights after one f32 optimizer step and after one bf16 step from the same start. AdamW
// normalises each gradient element, so a rounding-sized gradient change can move a weight by up
// to ~lr: this is measured through the trainer's own step, not estimated from the forward.
double update_budget(const Config& c) {
  Config one = c;
  one.training.max_steps = 1;
  std::unique_ptr<lmf::nn::CausalLM> after[2];
  for (int i = 0; i < 2; ++i) {
    one.run.precision = i == 0 ? Precision::fp32 : Precision::bf16;
    one.run.out_dir = fresh_dir(std::string("one_step_") + (i == 0 ? "f32_" : "bf16_") + (c.model.arch == lmf::train::ModelArch::llama ? "llama" : "gpt")).string();
    Trainer(one).fit();
    after[i] = lmf::train::detail::load_model(fs::path(one.run.out_dir) / "final");
    after[i]->eval();
  }
  double budget = 0;
  for (const auto& batch : batches(c, kBudgetBatches))
    budget = std::max(budget, std::fabs(f32_loss(*after[1], batch) - f32_loss(*after[0], batch)));
  return budget;
}

// The bound, from measurements taken before the bf16 run:
//   forward: the bf16 forward's own rounding at identical weights (forward_budget);
//   update: one bf16 step's effect on the loss (update_budget), with warmup_steps 0 so that this
//     first step has the run's largest learning rate (the cosine only decays from it) and AdamW's
//     most sign-like update (m / sqrt(v) = +-1), the worst case for amplifying a rounding;
//   growth G: how much the training dynamics amplify a perturbation within the run's horizon,
//     measured by an f32 run R started from the initial weights rounded to bf16 once against the
//     f32 run F: G = max_k |R_k - F_k| / |R_1 - F_1| over the whole run (at least 1).
// The bf16 run perturbs every step by at most one update budget and each perturbation grows by at
// most G; to first order the effects add. So at step i (1-based):
//   |bf16_i - F_i| <= forward + (i - 1) * update * G.
// All three are measured before the bf16 run; nothing in the bound is fitted to its outcome.
void check_tracks_f32(Config c, const std::string& name) {
  c.training.warmup_steps = 0;
  c.validate();
  const double forward = forward_budget(c), update = update_budget(c);
  REQUIRE(forward > 0);     // the rounding is real: bf16 changes the loss at all
  REQUIRE(forward < 0.02);  // and small: a bf16 forward is not broken (the loss is ~3)
  REQUIRE(update < 0.05);
  const std::vector<float> f32 = train(c, Precision::fp32, false, name + "_f32");
  const std::vector<float> rounded = train(c, Precision::fp32, true, name + "_f32_rounded_init");
  const std::vector<float> bf16 = train(c, Precision::bf16, false, name + "_bf16");
  REQUIRE(bf16.size() == f32.size());
  REQUIRE(rounded.size() == f32.size());
  CHECK(bf16 != f32);  // the bf16 run really ran in bf16
  const double first = std::fabs(double(rounded[0]) - double(f32[0]));
  REQUIRE(first > 0);
  double growth = 1;
  for (std::size_t i = 0; i < f32.size(); ++i)
    growth = std::max(growth, std::fabs(double(rounded[i]) - double(f32[i])) / first);
  double worst_ratio = 0;
  for (std::size_t i = 0; i < f32.size(); ++i) {
    const double diff = std::fabs(double(bf16[i]) - double(f32[i]));
    const double bound = forward + double(i) * update * growth;
    INFO("step " << i + 1 << ": f32 " << f32[i] << ", bf16 " << bf16[i] << ", budgets forward " << forward
                 << " update " << update << ", growth " << growth << ", bound " << bound);
    CHECK(diff <= bound);
    worst_ratio = std::max(worst_ratio, diff / bound);
  }
  WARN(name << ": forward budget " << forward << ", update budget " << update << ", growth " << growth
            << ", worst |bf16 - f32| / bound = " << worst_ratio << ", final losses f32 " << f32.back() << " bf16 "
            << bf16.back());
  CHECK(f32.back() < f32.front() - 0.3f);  // both runs learned something over the steps
  CHECK(bf16.back() < bf16.front() - 0.3f);
}

// Every tensor's dtype in a safetensors file, read from its JSON header.
std::vector<std::string> file_dtypes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  std::vector<std::string> out;
  const nlohmann::json j = nlohmann::json::parse(header);
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "__metadata__") out.push_back(it.value().at("dtype").get<std::string>());
  return out;
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Run A trains `steps` in bf16; run B stops at `stop_at` and a second Trainer resumes it: the
// losses and the final files must be identical byte for byte, and every file tensor f32.
void check_bf16_resume(Config c, const std::string& name, int64_t steps, int64_t stop_at) {
  c.run.precision = Precision::bf16;
  c.training.max_steps = steps;
  Config a = c, b = c;
  a.run.out_dir = fresh_dir(name + "_a").string();
  b.run.out_dir = fresh_dir(name + "_b").string();
  std::vector<float> la, lb;
  const auto record = [](std::vector<float>& losses, int64_t stop) {
    Callbacks cb;
    cb.on_step = [&losses, stop](const StepMetrics& m) {
      losses.push_back(m.train_loss);
      return m.step != stop;
    };
    return cb;
  };
  Trainer(a, record(la, -1)).fit();
  REQUIRE(Trainer(b, record(lb, stop_at)).fit().stop_reason == "callback");
  REQUIRE(Trainer(b, record(lb, -1)).fit().steps == steps);
  REQUIRE(la.size() == static_cast<std::size_t>(steps));
  REQUIRE(lb.size() == la.size());
  for (std::size_t i = 0; i < la.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(la[i] == lb[i]);  // bit-identical
  }
  const fs::path fa = fs::path(a.run.out_dir) / "final", fb = fs::path(b.run.out_dir) / "final";
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    INFO(file);
    CHECK(read_bytes(fa / file) == read_bytes(fb / file));
    const std::vector<std::string> dtypes = file_dtypes(fa / file);
    REQUIRE_FALSE(dtypes.empty());
    // Master weights and moments stay f32 (the optimizer file may also hold integer counters).
    for (const std::string& d : dtypes) CHECK((d == "F32" || (d != "BF16" && d != "F16" && std::string(file) != "model.safetensors")));
  }
  const fs::path step_dir = fs::path(b.run.out_dir) / "checkpoints";
  for (const auto& e : fs::directory_iterator(step_dir))
    for (const std::string& d : file_dtypes(e.path() / "model.safetensors")) CHECK(d == "F32");
}

}  // namespace

TEST_CASE("run.precision: bf16 GPT losses track f32 within a bound built from measured rounding budgets") {
  check_tracks_f32(tiny_config("gpt", false, 12), "gpt");
}

TEST_CASE("run.precision: bf16 Llama losses track f32 within a bound built from measured rounding budgets") {
  check_tracks_f32(tiny_config("llama", true, 12), "llama");
}

TEST_CASE("run.precision: bf16 writes f32 checkpoints and a stopped GPT run resumes bit-identically") {
  check_bf16_resume(tiny_config("resume_gpt", false, 10), "resume_gpt", 10, 5);
}

TEST_CASE("run.precision: bf16 Llama with dropout-free GQA resumes bit-identically") {
  check_bf16_resume(tiny_config("resume_llama", true, 8), "resume_llama", 8, 4);
}

TEST_CASE("run.precision: bf16 with dropout resumes bit-identically (the dropout draws of bf16 activations)") {
  Config c = tiny_config("resume_dropout", false, 8);
  c.model.dropout = 0.1f;
  check_bf16_resume(c, "resume_dropout", 8, 4);
}
