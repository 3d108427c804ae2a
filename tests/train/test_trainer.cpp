// Trainer behaviour on a tiny model (1 layer, n_embd 32, block 16, batch 4) and a generated
// char-level corpus: exact resume (losses, weights and moments bit for bit), early stopping with
// best-weight restore, accumulation, stopping by tokens, pruning, NaN handling, freezing, signals.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "e2e/cli_run.h"
#include "train/word_corpus.h"
#include "lmforge/core/error.h"
#include "lmforge/data/prepare.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/ops.h"
#include "lmforge/train/trainer.h"

namespace fs = std::filesystem;
using lmf::train::Callbacks;
using lmf::train::Config;
using lmf::train::StepMetrics;
using lmf::train::Trainer;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Byte-for-byte equality of two non-empty files (a bool, so a failure does not print the bytes).
bool same_bytes(const fs::path& a, const fs::path& b) {
  const std::string x = read_bytes(a);
  return !x.empty() && x == read_bytes(b);
}

fs::path fresh_dir(const std::string& name) { return lmf::test::work_dir("trainer", name); }

// Prepares `text` with the char tokenizer into a fresh directory (train.bin, val.bin, tokenizer).
fs::path prepare(const std::string& name, const std::string& text, double val_fraction = 0.1) {
  return lmf::test::prepare_char_corpus(fresh_dir(name), text, val_fraction);
}

const fs::path& corpus() {
  static const fs::path dir = prepare("corpus", lmf::test::generated_text(400, 17));
  return dir;
}

Config tiny_config(const fs::path& out_dir, int64_t max_steps) {
  Config c = lmf::test::tiny_run_config(out_dir, corpus(), 7, max_steps);
  c.training.lr = 3e-3f;
  c.training.min_lr = 3e-4f;
  c.checkpoint.interval = 4;
  c.logging.interval = 1;
  c.validate();
  return c;
}

std::vector<std::pair<int64_t, float>> logged_losses(const fs::path& out_dir) {
  std::vector<std::pair<int64_t, float>> out;
  std::ifstream in(out_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("train_loss")) out.emplace_back(j.at("step").get<int64_t>(), j.at("train_loss").get<float>());
  }
  return out;
}

std::map<std::string, std::vector<float>> weights(const lmf::nn::Module& model) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, t] : model.named_parameters()) out[name] = t.to_vector();
  return out;
}

std::map<std::string, std::vector<float>> checkpoint_weights(const fs::path& dir) {
  return weights(*lmf::io::load_gpt(dir));
}

std::string step_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
  return name;
}

std::vector<std::string> step_dirs(const fs::path& out_dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(out_dir / "checkpoints")) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

Callbacks record_losses(std::vector<float>& losses, int64_t stop_at = -1) {
  Callbacks cb;
  cb.on_step = [&losses, stop_at](const StepMetrics& m) {
    losses.push_back(m.train_loss);
    return m.step != stop_at;
  };
  return cb;
}

// Run A goes straight to `steps`; run B stops after `stop_at` and a second Trainer resumes it.
void check_exact_resume(Config base, const std::string& name, int64_t steps, int64_t stop_at) {
  const fs::path dir_a = fresh_dir(name + "_a"), dir_b = fresh_dir(name + "_b");
  Config a = base, b = base;
  a.run.out_dir = dir_a.string();
  b.run.out_dir = dir_b.string();
  a.training.max_steps = b.training.max_steps = steps;

  std::vector<float> losses_a, losses_b;
  Trainer(a, record_losses(losses_a)).fit();
  const auto first = Trainer(b, record_losses(losses_b, stop_at)).fit();
  REQUIRE(first.stop_reason == "callback");
  REQUIRE(first.steps == stop_at);
  REQUIRE(losses_b.size() == static_cast<std::size_t>(stop_at));
  std::vector<std::string> events;
  Callbacks resume_cb = record_losses(losses_b);
  resume_cb.on_event = [&events](const std::string& e, const std::string&) { events.push_back(e); };
  const auto second = Trainer(b, resume_cb).fit();
  CHECK(second.steps == steps);
  CHECK(second.stop_reason == "max_steps");
  CHECK(events.front() == "resume");

  REQUIRE(losses_a.size() == static_cast<std::size_t>(steps));
  REQUIRE(losses_b.size() == losses_a.size());
  for (std::size_t i = 0; i < losses_a.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(losses_a[i] == losses_b[i]);  // bit-identical, not approximately equal
  }
  // The resumed run's metrics.jsonl holds each step once, with the same losses.
  CHECK(logged_losses(dir_a) == logged_losses(dir_b));
  CHECK(logged_losses(dir_b).size() == static_cast<std::size_t>(steps));
  CHECK(same_bytes(dir_a / "final" / "model.safetensors", dir_b / "final" / "model.safetensors"));
  CHECK(same_bytes(dir_a / "final" / "optimizer.safetensors", dir_b / "final" / "optimizer.safetensors"));
}

}  // namespace

TEST_CASE("two identical runs in one process end with bit-identical weights") {
  // The baseline for every resume test below: without it a resume mismatch could not be told
  // apart from a step that is not deterministic to begin with.
  Config c = tiny_config(fresh_dir("repeat_1"), 4);
  Trainer(c).fit();
  c.run.out_dir = fresh_dir("repeat_2").string();
  Trainer(c).fit();
  CHECK(same_bytes(fs::path(LMF_BINARY_DIR) / "test-data/trainer/repeat_1/final/model.safetensors",
                   fs::path(c.run.out_dir) / "final" / "model.safetensors"));
}

TEST_CASE("resume continues bit-identically from a periodic checkpoint (random order)") {
  check_exact_resume(tiny_config("", 10), "resume_random", 10, 4);
}

TEST_CASE("resume continues bit-identically with dropout: the dropout RNG state is restored") {
  Config c = tiny_config("", 10);
  c.model.dropout = 0.2f;
  check_exact_resume(c, "resume_dropout", 10, 4);
}

TEST_CASE("resume continues bit-identically in sequential order from a stop between checkpoints") {
  Config c = tiny_config("", 10);
  c.data.order = lmf::data::LoaderOrder::sequential;
  c.model.dropout = 0.1f;
  check_exact_resume(c, "resume_sequential", 10, 6);
}

TEST_CASE("resume continues bit-identically across evaluations and a stop between them") {
  Config c = tiny_config("", 12);
  c.model.dropout = 0.1f;
  c.eval.interval = 4;
  check_exact_resume(c, "resume_eval", 12, 6);
}

TEST_CASE("a dropout run differs from a run without dropout, so the resume test sees dropout") {
  Config c = tiny_config(fresh_dir("dropout_on"), 3);
  c.model.dropout = 0.2f;
  std::vector<float> with, without;
  Trainer(c, record_losses(with)).fit();
  c.model.dropout = 0.f;
  c.run.out_dir = fresh_dir("dropout_off").string();
  Trainer(c, record_losses(without)).fit();
  CHECK(with != without);
}

TEST_CASE("run.matmul_precision: bf16 trains close to f32, differs from it, and is switched off again") {
  if (!lmf::cpu_matmul_bf16_available()) {
    WARN("skipped: this CPU has no AVX-512 BF16");
    return;
  }
  Config c = tiny_config(fresh_dir("matmul_f32"), 8);
  std::vector<float> f32, bf16, f32_again;
  Trainer(c, record_losses(f32)).fit();
  c.run.matmul_precision = lmf::train::Precision::bf16;
  c.run.out_dir = fresh_dir("matmul_bf16").string();
  Trainer(c, record_losses(bf16)).fit();
  c.run.matmul_precision = lmf::train::Precision::fp32;
  c.run.out_dir = fresh_dir("matmul_f32_again").string();
  Trainer(c, record_losses(f32_again)).fit();
  REQUIRE(bf16.size() == f32.size());
  CHECK(bf16 != f32);        // the products really ran in bf16
  CHECK(f32_again == f32);   // and the next f32 trainer is back to f32, bit for bit
  for (std::size_t i = 0; i < f32.size(); ++i) CHECK(bf16[i] == Approx(f32[i]).epsilon(0.02));
}

TEST_CASE("logged steps carry MFU: tokens/s x (6N + 12LCT) over logging.peak_gflops, or a measured CPU peak") {
  Config c = tiny_config(fresh_dir("mfu"), 4);
  c.logging.peak_gflops = 2.5;
  Trainer(c).fit();
  // n_layer 1, n_embd 32, block 16, vocab from the corpus' tokenizer: N without wpe = 12 C^2 + 13 C
  // (block) + 2 C (ln_f) + V C (wte, also the head).
  const int64_t vocab = lmf::data::load_tokenizer((corpus() / "tokenizer.json").string())->vocab_size();
  const double n = 12.0 * 32 * 32 + 13.0 * 32 + 2.0 * 32 + double(vocab) * 32;
  const double flops_per_token = 6.0 * n + 12.0 * 1 * 32 * 16;
  std::ifstream in(fs::path(c.run.out_dir) / "metrics.jsonl");
  int steps = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("train_loss")) continue;
    REQUIRE(j.contains("mfu"));
    CHECK(j.at("mfu").get<double>() ==
          Approx(j.at("tokens_per_sec").get<double>() * flops_per_token / 2.5e9).epsilon(1e-9));
    ++steps;
  }
  CHECK(steps == 4);
  // Without a given peak the trainer measures the CPU's and still reports a plausible MFU.
  c.logging.peak_gflops = 0;
  c.run.out_dir = fresh_dir("mfu_measured").string();
  std::vector<double> mfus;
  Callbacks cb;
  cb.on_step = [&](const lmf::train::StepMetrics& m) { mfus.push_back(m.mfu); return true; };
  Trainer(c, cb).fit();
  REQUIRE(mfus.size() == 4);
  for (double m : mfus) CHECK((m > 0 && m < 1.5));
}

namespace {
// The training text is one sentence over and over; the validation text is the same letters in a
// different order, so validation loss falls at first and then rises as the sentence is memorised.
Config overfitting_config(const fs::path& out) {
  static const fs::path data = [] {
    std::string text;
    for (int i = 0; i < 300; ++i) text += "the quick brown fox jumps over the lazy dog. ";
    std::string shuffled = text.substr(0, 2000);
    uint32_t state = 5;
    for (std::size_t i = shuffled.size() - 1; i > 0; --i) {
      state = state * 1664525u + 1013904223u;
      std::swap(shuffled[i], shuffled[(state >> 8) % (i + 1)]);
    }
    return prepare("early_data", text + shuffled, 2000.0 / (text.size() + 2000.0));
  }();
  Config c = tiny_config(out, 400);
  c.data.train = data.string();
  c.data.val = (data / "val.bin").string();
  c.training.lr = 1e-2f;
  c.training.min_lr = 1e-2f;
  c.training.schedule = lmf::optim::ScheduleKind::constant;
  c.eval.interval = 10;
  c.eval.batches = 4;
  c.early_stopping.enabled = true;
  c.early_stopping.patience = 3;
  c.checkpoint.interval = 0;
  return c;
}
}  // namespace

TEST_CASE("early stopping stops after patience evaluations without improvement and restores the best") {
  const fs::path out = fresh_dir("early");
  const Config c = overfitting_config(out);
  std::vector<std::pair<int64_t, float>> evals;
  Callbacks cb;
  cb.on_eval = [&evals](int64_t step, float val) { evals.emplace_back(step, val); };
  Trainer trainer(c, cb);
  const auto result = trainer.fit();
  REQUIRE(result.stop_reason == "early_stop");
  REQUIRE(evals.size() >= 4);

  // Independently of the trainer: the best evaluation and how many followed it.
  std::size_t best = 0;
  for (std::size_t i = 1; i < evals.size(); ++i)
    if (evals[i].second < evals[best].second) best = i;
  CHECK(evals.size() - 1 - best == 3);  // stopped at exactly `patience` evaluations past the best
  CHECK(result.best_step == evals[best].first);
  CHECK(result.best_val_loss == evals[best].second);
  CHECK(result.steps == evals.back().first);

  // final/ and the trainer's model hold the best weights, not the last ones.
  const auto best_weights = checkpoint_weights(out / "best");
  CHECK(checkpoint_weights(out / "final") == best_weights);
  CHECK(weights(trainer.model()) == best_weights);
  CHECK(trainer.evaluate() == evals[best].second);
  // The last step's checkpoint still holds the last weights (they differ from the best).
  CHECK(checkpoint_weights(out / "checkpoints" / step_name(result.steps)) != best_weights);
}

TEST_CASE("gradient accumulation of 2x4 sequences matches one batch of 8 and counts optimizer steps") {
  Config accum = tiny_config(fresh_dir("accum_2x4"), 5);
  accum.data.order = lmf::data::LoaderOrder::sequential;  // two micro-batches of 4 read the same windows as one of 8
  accum.training.grad_accum_steps = 2;
  Config whole = accum;
  whole.run.out_dir = fresh_dir("accum_1x8").string();
  whole.training.batch_size = 8;
  whole.training.grad_accum_steps = 1;
  std::vector<float> losses_accum, losses_whole;
  const auto r_accum = Trainer(accum, record_losses(losses_accum)).fit();
  Trainer(whole, record_losses(losses_whole)).fit();
  CHECK(r_accum.steps == 5);
  REQUIRE(losses_accum.size() == 5);
  REQUIRE(losses_whole.size() == 5);
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(std::isfinite(losses_accum[i]));
    CHECK(losses_accum[i] == Approx(losses_whole[i]).epsilon(1e-4));
  }
  // The first loss is the initial model's: a mean of means equals the mean to rounding.
  CHECK(losses_accum[0] == Approx(losses_whole[0]).epsilon(1e-6));
  const auto wa = checkpoint_weights(fs::path(accum.run.out_dir) / "final");
  const auto ww = checkpoint_weights(fs::path(whole.run.out_dir) / "final");
  for (const auto& [name, values] : wa)
    for (std::size_t i = 0; i < values.size(); ++i) {
      INFO(name << "[" << i << "]");
      REQUIRE(values[i] == Approx(ww.at(name)[i]).margin(1e-4));
    }
}

TEST_CASE("max_tokens stops after the steps needed to see that many tokens") {
  // 4 sequences x 16 tokens x 2 micro-batches = 128 tokens per step; 5 steps see 640 tokens.
  Config c = tiny_config(fresh_dir("max_tokens_exact"), 1);
  c.training.max_steps = 0;
  c.training.grad_accum_steps = 2;
  c.training.max_tokens = 640;
  auto r = Trainer(c).fit();
  CHECK(r.steps == 5);
  CHECK(r.stop_reason == "max_tokens");
  // One token more needs a sixth step.
  c.run.out_dir = fresh_dir("max_tokens_round_up").string();
  c.training.max_tokens = 641;
  r = Trainer(c).fit();
  CHECK(r.steps == 6);
  // max_steps wins when it is the smaller bound.
  c.run.out_dir = fresh_dir("max_tokens_and_steps").string();
  c.training.max_steps = 3;
  r = Trainer(c).fit();
  CHECK(r.steps == 3);
  CHECK(r.stop_reason == "max_steps");
}

TEST_CASE("keep_last keeps only the newest periodic checkpoints") {
  const fs::path out = fresh_dir("keep_last");
  Config c = tiny_config(out, 10);
  c.checkpoint.interval = 2;
  c.checkpoint.keep_last = 2;
  Trainer(c).fit();
  CHECK(step_dirs(out) == std::vector<std::string>{step_name(8), step_name(10)});
  CHECK(fs::exists(out / "final" / "model.safetensors"));
}

TEST_CASE("resume refuses a checkpoint of another architecture, naming it") {
  const fs::path out = fresh_dir("resume_shape");
  Trainer(tiny_config(out, 4)).fit();
  Config other = tiny_config(out, 8);
  other.model.n_head = 4;  // same parameter shapes, different attention: must not resume silently
  try {
    Trainer(other).fit();
    FAIL("resume accepted a checkpoint with n_head 2 for a config with n_head 4");
  } catch (const lmf::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("different shape") && Catch::Contains("n_head 2") &&
                             Catch::Contains(step_name(4)));
  }
}

TEST_CASE("a new start removes half-written directories a killed run left, and nothing else") {
  const fs::path out = fresh_dir("leftovers");
  const std::vector<fs::path> stale = {out / "checkpoints" / "step_00000004.tmp-Ab12Cd",
                                       out / "checkpoints" / "step_00000002.deleting",
                                       out / "final.tmp-Zz99Yy", out / "best.tmp-Qq11Ww.old"};
  for (const auto& dir : stale) {
    fs::create_directories(dir);
    std::ofstream(dir / "trainer_state.json") << "{}";  // even one that looks complete inside
  }
  fs::create_directories(out / "notes");
  Trainer(tiny_config(out, 2)).fit();
  for (const auto& dir : stale) CHECK_FALSE(fs::exists(dir));
  CHECK(fs::exists(out / "notes"));
  CHECK(fs::exists(out / "final" / "model.safetensors"));
}

TEST_CASE("config.yaml in the run directory re-parses to the same configuration") {
  const fs::path out = fresh_dir("config_yaml");
  Config c = tiny_config(out, 2);
  c.training.betas = {0.8f, 0.95f};
  c.finetune.freeze = {"wpe.*"};
  c.model.dropout = 0.25f;
  Trainer(c).fit();
  const Config back = Config::load((out / "config.yaml").string());
  CHECK(back.to_yaml() == c.to_yaml());
  CHECK(back.training.betas[0] == 0.8f);
  CHECK(back.training.betas[1] == 0.95f);
  CHECK(back.finetune.freeze == std::vector<std::string>{"wpe.*"});
  CHECK(back.model.dropout == 0.25f);
  CHECK(back.data.train == corpus().string());
  CHECK(back.training.max_steps == 2);
}

namespace {
// Sets ln_f.weight[0] (every position passes through it) to `value`; returns the old value.
float poke_ln_f(lmf::nn::Module& model, float value) {
  for (auto& [name, t] : model.named_parameters())
    if (name == "ln_f.weight") {
      float* p = t.data<float>();
      const float old = p[0];
      p[0] = value;
      return old;
    }
  FAIL("no ln_f.weight");
  return 0;
}
}  // namespace

TEST_CASE("on_nan stop raises an error naming the last good checkpoint, which loads") {
  const fs::path out = fresh_dir("nan_stop");
  Config c = tiny_config(out, 10);
  c.checkpoint.interval = 2;
  Trainer* self = nullptr;
  Callbacks cb;
  // Poisoned after step 3's callback: step 4's loss is NaN; step 2's checkpoint is the last one.
  cb.on_step = [&self](const StepMetrics& m) {
    if (m.step == 3) poke_ln_f(self->model(), std::nanf(""));
    return true;
  };
  Trainer trainer(c, cb);
  self = &trainer;
  std::string message;
  try {
    trainer.fit();
  } catch (const lmf::Error& e) {
    message = e.what();
  }
  INFO(message);
  const fs::path good = out / "checkpoints" / step_name(2);
  CHECK(message.find("step 4") != std::string::npos);
  CHECK(message.find(good.string()) != std::string::npos);
  for (const auto& [name, values] : checkpoint_weights(good))
    for (float v : values) REQUIRE(std::isfinite(v));
  CHECK_FALSE(fs::exists(out / "checkpoints" / step_name(4)));
}

TEST_CASE("on_nan stop before any checkpoint says there is none") {
  Config c = tiny_config(fresh_dir("nan_stop_early"), 10);
  Trainer* self = nullptr;
  Callbacks cb;
  cb.on_step = [&self](const StepMetrics& m) {
    if (m.step == 1) poke_ln_f(self->model(), std::numeric_limits<float>::infinity());
    return true;
  };
  Trainer trainer(c, cb);
  self = &trainer;
  CHECK_THROWS_WITH(trainer.fit(), Catch::Contains("step 2") && Catch::Contains("none"));
}

TEST_CASE("a huge learning rate without clipping is caught as non-finite, not trained through") {
  // No poisoning: the updates themselves blow the weights up. Whichever guard fires first (loss or
  // gradient norm), on_nan: stop must end the run with an error rather than finish with garbage.
  Config c = tiny_config(fresh_dir("nan_huge_lr"), 30);
  c.training.lr = 1e30f;
  c.training.min_lr = 1e30f;
  c.training.schedule = lmf::optim::ScheduleKind::constant;
  c.training.warmup_steps = 0;
  c.training.grad_clip = 0;
  c.training.weight_decay = 0;
  CHECK_THROWS_WITH(Trainer(c).fit(), Catch::Contains("Last good checkpoint"));
}

TEST_CASE("on_nan skip drops the bad update and training continues") {
  const fs::path out = fresh_dir("nan_skip");
  Config c = tiny_config(out, 8);
  c.training.on_nan = lmf::train::NanPolicy::skip;
  Trainer* self = nullptr;
  std::map<std::string, std::vector<float>> before;
  std::vector<StepMetrics> seen;
  float saved = 0;
  Callbacks cb;
  std::vector<std::string> events;
  cb.on_event = [&events](const std::string& e, const std::string&) { events.push_back(e); };
  cb.on_step = [&](const StepMetrics& m) {
    seen.push_back(m);
    if (m.step == 3) {
      before = weights(self->model());
      saved = poke_ln_f(self->model(), std::nanf(""));
    } else if (m.step == 4) {
      // The skipped step changed nothing but the poisoned value itself.
      auto now = weights(self->model());
      CHECK(std::isnan(now.at("ln_f.weight")[0]));
      now.at("ln_f.weight")[0] = before.at("ln_f.weight")[0];
      CHECK(now == before);
      poke_ln_f(self->model(), saved);
    }
    return true;
  };
  Trainer trainer(c, cb);
  self = &trainer;
  const auto r = trainer.fit();
  CHECK(r.steps == 8);
  REQUIRE(seen.size() == 8);
  for (const auto& m : seen) {
    INFO("step " << m.step);
    CHECK(m.skipped == (m.step == 4));
    CHECK(std::isfinite(m.train_loss) == (m.step != 4));
  }
  CHECK(std::count(events.begin(), events.end(), "skip") == 1);
  CHECK(std::isfinite(r.last_train_loss));
  for (const auto& [name, values] : checkpoint_weights(out / "final"))
    for (float v : values) REQUIRE(std::isfinite(v));
}

TEST_CASE("finetune.freeze leaves matching parameters unchanged and trains the rest") {
  const fs::path out = fresh_dir("freeze");
  Config c = tiny_config(out, 4);
  c.finetune.freeze = {"h.0.attn.*", "wpe"};
  Trainer trainer(c);
  const auto start = weights(trainer.model());
  trainer.fit();
  const auto end = checkpoint_weights(out / "final");
  int frozen = 0, trained = 0;
  for (const auto& [name, values] : start) {
    const bool is_frozen = name.rfind("h.0.attn.", 0) == 0 || name.rfind("wpe.", 0) == 0;
    INFO(name);
    if (is_frozen) {
      CHECK(end.at(name) == values);  // weight decay must not touch them either
      ++frozen;
    } else if (name.find("weight") != std::string::npos) {
      CHECK(end.at(name) != values);
      ++trained;
    }
  }
  CHECK(frozen == 5);  // c_attn.{weight,bias}, c_proj.{weight,bias}, wpe.weight
  CHECK(trained > 0);
}

TEST_CASE("a freeze pattern that matches no parameter is an error naming it") {
  Config c = tiny_config(fresh_dir("freeze_none"), 2);
  c.finetune.freeze = {"h.7.*"};
  CHECK_THROWS_WITH(Trainer(c), Catch::Contains("h.7.*") && Catch::Contains("matches no parameter"));
}

TEST_CASE("a signal stops fit after saving; the next fit in the same process runs normally") {
  const fs::path out = fresh_dir("signal");
  Config c = tiny_config(out, 8);
  c.checkpoint.interval = 0;
  Trainer::install_signal_handlers();
  Callbacks cb;
  cb.on_step = [](const StepMetrics& m) {
    if (m.step == 3) std::raise(SIGTERM);
    return true;
  };
  const auto first = Trainer(c, cb).fit();
  CHECK(first.stop_reason == "signal");
  CHECK(first.steps == 3);
  CHECK(step_dirs(out) == std::vector<std::string>{step_name(3)});
  const auto second = Trainer(c).fit();
  CHECK(second.stop_reason == "max_steps");
  CHECK(second.steps == 8);
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

TEST_CASE("early stopping decides the same after a stop between evaluations and a resume") {
  const fs::path dir_a = fresh_dir("early_resume_a"), dir_b = fresh_dir("early_resume_b");
  std::vector<float> losses_a, losses_b;
  const auto a = Trainer(overfitting_config(dir_a), record_losses(losses_a)).fit();
  REQUIRE(a.stop_reason == "early_stop");
  REQUIRE(a.steps > 20);
  Config b = overfitting_config(dir_b);
  b.checkpoint.interval = 10;
  const int64_t pause = a.steps - 15;  // between two evaluations, before the stop
  REQUIRE(pause % 10 != 0);
  REQUIRE(Trainer(b, record_losses(losses_b, pause)).fit().stop_reason == "callback");
  const auto resumed = Trainer(b, record_losses(losses_b)).fit();
  CHECK(resumed.stop_reason == "early_stop");
  CHECK(resumed.steps == a.steps);
  CHECK(resumed.best_step == a.best_step);
  CHECK(resumed.best_val_loss == a.best_val_loss);
  CHECK(losses_b == losses_a);
  CHECK(same_bytes(dir_a / "final" / "model.safetensors", dir_b / "final" / "model.safetensors"));
}

TEST_CASE("run.device: cuda without a GPU is refused naming the key") {
  Config c = tiny_config(fresh_dir("device_refused"), 2);
  if (lmf::cuda_available()) {
    WARN("the GPU half is skipped: a CUDA GPU is visible (tests/cuda/test_trainer.cpp trains on it)");
    return;
  }
  for (const char* device : {"cuda", "cuda:1"}) {
    c.run.device = lmf::train::DeviceSetting::parse(device);
    CHECK_THROWS_WITH(Trainer(c), Catch::Contains(std::string("run.device: ") + device) &&
                                      Catch::Contains("no CUDA GPU is available"));
  }
  // Without a GPU, auto trains on the CPU.
  c.run.device = lmf::train::DeviceSetting{};
  Trainer trainer(c);
  CHECK(trainer.model().slab()->device().is_cpu());
}

TEST_CASE("run.cuda_graph on a run that resolves to the CPU is refused naming the key") {
  Config c = tiny_config(fresh_dir("cuda_graph_cpu"), 2);
  if (lmf::cuda_available()) {
    WARN("skipped: a CUDA GPU is visible, so run.device: auto is not the CPU here");
    return;
  }
  c.run.cuda_graph = true;  // run.device: auto, which is the CPU without a GPU
  CHECK_THROWS_WITH(Trainer(c), Catch::Contains("run.cuda_graph: true needs a GPU"));
}

TEST_CASE("distributed.backend: nccl on the CPU is refused naming both keys") {
  Config c = tiny_config(fresh_dir("nccl_cpu"), 2);
  c.distributed.backend = lmf::train::CommBackend::nccl;
  CHECK_THROWS_WITH(Trainer(c), Catch::Contains("distributed.backend: nccl") && Catch::Contains("run.device"));
}

TEST_CASE("model.arch: llama trains, resumes bit-identically and writes a Hugging Face Llama directory") {
  Config c = tiny_config("", 8);
  c.model.arch = lmf::train::ModelArch::llama;
  c.model.n_head = 4;
  c.model.n_kv_head = 2;
  c.model.qk_norm = true;
  c.validate();
  check_exact_resume(c, "resume_llama", 8, 4);
  const fs::path final_dir = fs::path(LMF_BINARY_DIR) / "test-data/trainer/resume_llama_a/final";
  std::unique_ptr<lmf::nn::CausalLM> model = lmf::io::load_model(final_dir);
  CHECK(model->arch() == "qwen3");
  CHECK(model->has_parameter("model.layers.0.self_attn.q_norm.weight"));
  CHECK(model->parameter("model.layers.0.self_attn.k_proj.weight").shape() == lmf::Shape{16, 32});
}

TEST_CASE("training.optimizer: muon trains, resumes bit-identically and checkpoints its momentum") {
  Config c = tiny_config("", 8);
  c.model.arch = lmf::train::ModelArch::llama;
  c.model.n_head = 4;
  c.model.n_kv_head = 2;
  c.training.optimizer = lmf::train::OptimizerKind::muon;
  c.training.muon_lr = 0.02f;
  c.training.muon_weight_decay = 0.01f;
  c.validate();
  check_exact_resume(c, "resume_muon", 8, 4);
  const fs::path final_dir = fs::path(LMF_BINARY_DIR) / "test-data/trainer/resume_muon_a/final";
  const auto file = lmf::io::read_safetensors(final_dir / "optimizer.safetensors");
  // Muon's matrices: momentum buffers (non-zero after training) and untouched AdamW moments; the
  // embeddings, head and norms: AdamW moments and no Muon buffer.
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  REQUIRE(file.tensors.count("muon_momentum." + q));
  const auto momentum = file.tensors.at("muon_momentum." + q).to_vector();
  CHECK(std::any_of(momentum.begin(), momentum.end(), [](float v) { return v != 0.f; }));
  const auto adam_m = file.tensors.at("exp_avg." + q).to_vector();
  CHECK(std::all_of(adam_m.begin(), adam_m.end(), [](float v) { return v == 0.f; }));
  CHECK(file.tensors.count("muon_momentum.model.layers.0.mlp.down_proj.weight"));
  CHECK_FALSE(file.tensors.count("muon_momentum.model.embed_tokens.weight"));
  CHECK_FALSE(file.tensors.count("muon_momentum.model.norm.weight"));
  const auto embed_m = file.tensors.at("exp_avg.model.embed_tokens.weight").to_vector();
  CHECK(std::any_of(embed_m.begin(), embed_m.end(), [](float v) { return v != 0.f; }));

  // Muon trains differently from AdamW, and neither resumes the other's checkpoint.
  Config adamw = c;
  adamw.training.optimizer = lmf::train::OptimizerKind::adamw;
  adamw.run.out_dir = fresh_dir("muon_vs_adamw").string();
  adamw.training.max_steps = 8;
  Trainer(adamw).fit();
  CHECK_FALSE(same_bytes(final_dir / "model.safetensors", fs::path(adamw.run.out_dir) / "final" / "model.safetensors"));
  adamw.training.max_steps = 12;
  adamw.checkpoint.resume = lmf::train::ResumeMode::path;
  adamw.checkpoint.resume_path = (fs::path(LMF_BINARY_DIR) / "test-data/trainer/resume_muon_a/checkpoints" /
                                  step_name(8)).string();
  adamw.run.out_dir = fresh_dir("muon_into_adamw").string();
  CHECK_THROWS_WITH(Trainer(adamw).fit(), Catch::Contains("Muon momentum") && Catch::Contains("training.optimizer: muon"));
  Config muon = c;
  muon.training.max_steps = 12;
  muon.checkpoint.resume = lmf::train::ResumeMode::path;
  muon.checkpoint.resume_path = (fs::path(adamw.run.out_dir).parent_path() / "muon_vs_adamw/checkpoints" / step_name(8)).string();
  muon.run.out_dir = fresh_dir("adamw_into_muon").string();
  CHECK_THROWS_WITH(Trainer(muon).fit(), Catch::Contains("no Muon momentum"));

  Config zero = c;
  zero.distributed.zero = 1;
  zero.distributed.backend = lmf::train::CommBackend::mpi;
  CHECK_THROWS_WITH(zero.validate(), Catch::Contains("distributed.zero: 1") && Catch::Contains("training.optimizer: muon"));
}
