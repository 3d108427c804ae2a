// The trainer's public parts on their own and the run-directory guarantees fit() gives: a custom
// loop built from Checkpointer + RunLog + EarlyStopping + DataParallel + AdamW over a GPT resumes
// bit-exactly; RunLock refuses a second process; resume: never refuses or sets an earlier run
// aside; metrics.jsonl survives write failures without a torn line; damaged trainer states are
// named with the newest intact checkpoint.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "e2e/cli_run.h"
#include "train/word_corpus.h"
#include "lmforge/core/error.h"
#include "lmforge/data/loader.h"
#include "lmforge/dist/comm.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/train/checkpointer.h"
#include "lmforge/train/config.h"
#include "lmforge/train/data_parallel.h"
#include "lmforge/train/guards.h"
#include "lmforge/train/run_lock.h"
#include "lmforge/train/run_log.h"
#include "lmforge/train/trainer.h"

namespace fs = std::filesystem;
using namespace lmf::train;

namespace {

fs::path fresh_dir(const std::string& name) { return lmf::test::work_dir("train_parts", name); }

const fs::path& corpus() {
  static const fs::path dir =
      lmf::test::prepare_char_corpus(fresh_dir("corpus"), lmf::test::generated_text(300, 5));
  return dir;
}

Config tiny_config(const fs::path& out_dir, int64_t max_steps) {
  Config c = lmf::test::tiny_run_config(out_dir, corpus(), 3, max_steps);
  c.checkpoint.interval = 2;
  c.validate();
  return c;
}

std::vector<std::string> lines_of(const fs::path& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// --- a custom loop from the public parts -----------------------------------------------------

struct LoopResult {
  std::vector<float> losses;  // every step's training loss
  int64_t stopped_at = 0;
  float best = 0;
};

// Trains a GPT for up to `steps` steps with validation every 2 steps and early stopping, saving
// a checkpoint every 2 steps. With resume, continues from the newest intact checkpoint of `run`.
// Stops (as if killed) after `stop_after` steps of this call when that is > 0.
LoopResult custom_loop(const fs::path& run, int64_t steps, bool resume, int64_t stop_after = 0) {
  lmf::nn::GPTConfig gc;
  gc.n_layer = 1;
  gc.n_head = 2;
  gc.n_embd = 32;
  gc.block_size = 16;
  gc.vocab_size = 64;
  gc.dropout = 0.1f;  // the dropout generator must be restored too
  lmf::nn::GPT model(gc, 11);
  lmf::optim::AdamWConfig oc;
  oc.lr = 3e-3f;
  lmf::optim::AdamW optimizer(model, oc);
  auto comm = lmf::dist::make_comm("none");
  DataParallel dp(*comm, model, optimizer);
  lmf::data::LoaderOptions lo;
  lo.batch_size = 4;
  lo.block_size = 16;
  lo.seed = 5;
  lmf::data::DataLoader train((corpus() / "train.bin").string(), lo);
  lo.order = lmf::data::LoaderOrder::sequential;
  lmf::data::DataLoader val((corpus() / "val.bin").string(), lo);

  Checkpointer checkpointer(run, 2);
  EarlyStoppingConfig ec;
  ec.enabled = true;
  ec.patience = 2;
  EarlyStopping early(ec);
  LossGuard guard(4.f);
  TrainState state;
  if (resume) {
    const fs::path newest = checkpointer.newest_intact();
    REQUIRE(!newest.empty());
    state = Checkpointer::load(newest, model, optimizer);
    train.set_position(state.loader);
    early.set_state(state.best_val_loss, state.best_step, state.evals_without_improvement);
    guard.set_recent(state.recent_losses);
  }
  RunLogOptions lopt;
  lopt.metrics_path = run / "metrics.jsonl";
  lopt.progress = ProgressMode::none;
  lopt.total_steps = steps;
  RunLog log(lopt);
  log.open(resume ? state.step : -1);

  LoopResult result;
  int64_t step = state.step, done_here = 0;
  model.train();
  while (step < steps && !early.should_stop()) {
    model.zero_grad();
    const auto batch = train.next();
    const lmf::Tensor loss = model.forward_with_loss(batch.inputs, batch.targets).loss;
    dp.backward(loss, true);
    const float value = loss.to_vector()[0];
    REQUIRE(guard.check(value) == LossVerdict::ok);
    const double norm = dp.clip_gradients(1.0);
    optimizer.step();
    dp.after_step();
    guard.accept(value);
    ++step;
    result.losses.push_back(value);
    log.log_step(StepMetrics{step, value, optimizer.lr(), norm, 0, 0, 0, false});
    if (step % 2 == 0) {
      lmf::NoGradGuard no_grad;
      model.eval();
      val.reset();
      const auto vb = val.next();
      const float v = model.forward_with_loss(vb.inputs, vb.targets).loss.to_vector()[0];
      model.train();
      log.log_eval(step, v, 0, early.update(step, v));
      state.step = step;
      state.dropout_rng = model.dropout_generator().state();
      state.loader = train.position();
      state.best_val_loss = early.best();
      state.best_step = early.best_step();
      state.evals_without_improvement = early.evals_without_improvement();
      state.recent_losses = guard.recent();
      checkpointer.save(model, dp.optimizer_moments(), optimizer.step_count(), state);
    }
    if (stop_after > 0 && ++done_here == stop_after) break;
  }
  result.stopped_at = step;
  result.best = early.best();
  return result;
}

}  // namespace

TEST_CASE("a custom loop from Checkpointer, RunLog, EarlyStopping and DataParallel resumes bit-exactly") {
  const fs::path a = fresh_dir("custom_a"), b = fresh_dir("custom_b");
  const LoopResult whole = custom_loop(a, 10, false);
  const LoopResult first = custom_loop(b, 10, false, 4);
  REQUIRE(first.stopped_at == 4);
  const LoopResult rest = custom_loop(b, 10, true);
  std::vector<float> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  CHECK(joined == whole.losses);  // bit for bit
  CHECK(rest.stopped_at == whole.stopped_at);
  CHECK(rest.best == whole.best);
  // keep_last 2 pruned the rest; the metrics file holds the same lines as the uninterrupted run.
  CHECK(Checkpointer(b, 2).list().size() == 2);
  const auto lines_a = lines_of(a / "metrics.jsonl"), lines_b = lines_of(b / "metrics.jsonl");
  CHECK(lines_a == lines_b);
  CHECK(!lines_a.empty());
}

TEST_CASE("EarlyStopping: patience, min_delta, and tracking the best while disabled") {
  EarlyStoppingConfig c;
  c.enabled = true;
  c.patience = 2;
  c.min_delta = 0.1f;
  EarlyStopping e(c);
  CHECK(e.update(1, 3.0f));
  CHECK(!e.update(2, 2.95f));  // within min_delta: not an improvement
  CHECK(!e.should_stop());
  CHECK(!e.update(3, 3.5f));
  CHECK(e.should_stop());
  CHECK(e.best() == 3.0f);
  CHECK(e.best_step() == 1);
  c.enabled = false;
  EarlyStopping off(c);
  off.update(1, 1.f);
  off.update(2, 2.f);
  off.update(3, 2.f);
  CHECK(!off.should_stop());
  CHECK(off.best_step() == 1);
}

TEST_CASE("LossGuard: non-finite losses always, spikes only after the warm-up window") {
  LossGuard g(3.f, 10, 5);
  CHECK(g.check(std::nanf("")) == LossVerdict::non_finite);
  CHECK(g.check(INFINITY) == LossVerdict::non_finite);
  CHECK(g.check(100.f) == LossVerdict::ok);  // no window yet
  for (float l : {2.0f, 2.1f, 1.9f, 2.0f, 2.05f}) g.accept(l);
  CHECK(g.check(2.1f) == LossVerdict::ok);
  CHECK(g.check(5.0f) == LossVerdict::spike);
  CHECK(g.recent().size() == 5);
}

TEST_CASE("LossGuard::spike_reference is the window's mean and sd that check() tests, off until warm") {
  LossGuard off(0.f, 10, 2);
  off.accept(1.f), off.accept(2.f), off.accept(3.f);
  CHECK(off.spike_reference().zscore == 0.f);  // spike test disabled
  LossGuard g(2.5f, 4, 3);
  g.accept(2.0f), g.accept(2.2f);
  CHECK(g.spike_reference().zscore == 0.f);  // fewer than warmup losses
  for (float l : {1.8f, 2.4f, 2.1f}) g.accept(l);  // the window keeps the last 4: 2.2 1.8 2.4 2.1
  const double window[] = {2.2f, 1.8f, 2.4f, 2.1f};
  double mean = 0, var = 0;
  for (double l : window) mean += l / 4;
  for (double l : window) var += (l - mean) * (l - mean) / 4;
  const LossGuard::SpikeReference r = g.spike_reference();
  CHECK(r.zscore == 2.5f);
  CHECK(r.mean == Approx(mean).epsilon(1e-12));
  CHECK(r.sd == Approx(std::sqrt(var)).epsilon(1e-12));
  // The GPU's test, from the reference alone, decides as check() for losses around the limit.
  for (float loss = 1.5f; loss < 3.5f; loss += 0.01f) {
    const bool device_spike = r.sd > 0 && (loss - r.mean) / r.sd > r.zscore;
    CHECK(device_spike == (g.check(loss) == LossVerdict::spike));
  }
  CHECK(g.check(mean + 2.6 * std::sqrt(var)) == LossVerdict::spike);
  CHECK(g.check(mean + 2.4 * std::sqrt(var)) == LossVerdict::ok);
}

// --- the run lock ---------------------------------------------------------------------------------

TEST_CASE("RunLock: a second lock on a run directory is refused; the lock dies with its process") {
  const fs::path run = fresh_dir("lock");
  {
    RunLock first(run);
    CHECK_THROWS_WITH(RunLock(run), Catch::Contains("is in use by another training process") &&
                                        Catch::Contains(run.string()));
    // fit() takes the same lock, so a trainer on the directory is refused before it touches it.
    CHECK_THROWS_WITH(Trainer(tiny_config(run, 2)).fit(), Catch::Contains("in use by another training process"));
    CHECK(!fs::exists(run / "metrics.jsonl"));
  }
  { RunLock again(run); }
  // A process killed while it holds the lock leaves nothing stale behind.
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    try {
      RunLock held(run);
      char ok = 1;
      if (::write(pipe_fds[1], &ok, 1) != 1) ::_exit(3);
      ::pause();
    } catch (...) {
    }
    ::_exit(2);
  }
  char ok = 0;
  REQUIRE(::read(pipe_fds[0], &ok, 1) == 1);
  CHECK_THROWS_WITH(RunLock(run), Catch::Contains("in use"));
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  CHECK_NOTHROW(RunLock(run));
}

TEST_CASE("lmforge train: a second process on a locked run directory is refused with one clear line") {
  const fs::path run = fresh_dir("lock_cli");
  const fs::path cfg = run.parent_path() / "lock_cli.yaml";
  lmf::test::write_file(cfg, tiny_config(run, 2).to_yaml());
  RunLock held(run);  // this process plays the first trainer
  const auto r = lmf::test::lmforge(run.parent_path(), "train " + lmf::test::quote(cfg.string()));
  lmf::test::require_clean_error(r, {"run.out_dir", "in use by another training process"});
}

// --- fresh starts never mix two runs ---------------------------------------------------------------

TEST_CASE("resume: never over an earlier run refuses, and with force_fresh sets it aside whole") {
  const fs::path run = fresh_dir("never");
  for (const auto& e : fs::directory_iterator(run.parent_path()))
    if (e.path().filename().string().rfind("never.previous-", 0) == 0) fs::remove_all(e.path());
  Trainer(tiny_config(run, 6)).fit();
  const std::string old_metrics = lmf::test::slurp(run / "metrics.jsonl");
  const std::string old_model = lmf::test::slurp(run / "checkpoints" / "step_00000006" / "model.safetensors");

  Config c = tiny_config(run, 2);
  c.checkpoint.resume = ResumeMode::never;
  CHECK_THROWS_WITH(Trainer(c).fit(), Catch::Contains("checkpoint.resume: never") && Catch::Contains("--force") &&
                                          Catch::Contains("earlier run"));
  CHECK(lmf::test::slurp(run / "metrics.jsonl") == old_metrics);  // refused before touching anything

  c.checkpoint.force_fresh = true;
  std::vector<std::string> events;
  Callbacks cb;
  cb.on_event = [&events](const std::string& name, const std::string&) { events.push_back(name); };
  CHECK(Trainer(c, cb).fit().steps == 2);
  CHECK(events.front() == "set_aside");
  fs::path aside;
  for (const auto& e : fs::directory_iterator(run.parent_path()))
    if (e.path().filename().string().rfind("never.previous-", 0) == 0) aside = e.path();
  REQUIRE(!aside.empty());
  CHECK(lmf::test::slurp(aside / "metrics.jsonl") == old_metrics);
  CHECK(lmf::test::slurp(aside / "checkpoints" / "step_00000006" / "model.safetensors") == old_model);
  CHECK(fs::exists(aside / "final" / "model.safetensors"));
  // The new run holds only its own checkpoints, so resume: auto continues it and not the old one.
  const auto listed = Checkpointer(run).list();
  REQUIRE(listed.size() == 1);
  CHECK(listed.back().filename() == "step_00000002");
}

TEST_CASE("lmforge train --force sets an earlier run aside; without it resume: never is one clear error") {
  const fs::path run = fresh_dir("never_cli");
  const fs::path cfg = run.parent_path() / "never_cli.yaml";
  Config c = tiny_config(run, 2);
  c.checkpoint.resume = ResumeMode::never;
  lmf::test::write_file(cfg, c.to_yaml());
  const std::string train = "train " + lmf::test::quote(cfg.string());
  REQUIRE(lmf::test::lmforge(run.parent_path(), train).exit_code == 0);
  lmf::test::require_clean_error(lmf::test::lmforge(run.parent_path(), train), {"checkpoint.resume: never", "--force"});
  CHECK(lmf::test::lmforge(run.parent_path(), train + " --force").exit_code == 0);
}

// --- metrics.jsonl ----------------------------------------------------------------------------

TEST_CASE("RunLog: a failed write leaves no torn line, warns, and the lines are written later") {
  const fs::path run = fresh_dir("metrics_full");
  RunLogOptions o;
  o.metrics_path = run / "metrics.jsonl";
  o.progress = ProgressMode::none;
  RunLog log(o);
  log.open();
  log.write_line(R"({"step":1})");
  log.write_line(R"({"step":2})");
  const auto healthy = fs::file_size(o.metrics_path);
  // A "disk" with 5 bytes left: the next line is written in part, then fails (EFBIG).
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit tight = old;
  tight.rlim_cur = healthy + 5;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &tight) == 0);
  log.write_line(R"({"step":3,"train_loss":1.5})");
  log.write_line(R"({"step":4,"train_loss":1.25})");
  const auto during = lines_of(o.metrics_path);
  const auto pending = log.pending_lines();
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &old) == 0);
  ::signal(SIGXFSZ, old_handler);
  CHECK(during == std::vector<std::string>{R"({"step":1})", R"({"step":2})"});
  CHECK(fs::file_size(o.metrics_path) == healthy);
  CHECK(pending == 2);
  log.write_line(R"({"step":5})");
  CHECK(log.pending_lines() == 0);
  CHECK(lines_of(o.metrics_path) == std::vector<std::string>{R"({"step":1})", R"({"step":2})",
                                                             R"({"step":3,"train_loss":1.5})",
                                                             R"({"step":4,"train_loss":1.25})", R"({"step":5})"});
}

TEST_CASE("read_jsonl_lines skips a torn last line with a warning and refuses damage elsewhere") {
  const fs::path dir = fresh_dir("jsonl");
  lmf::test::write_file(dir / "torn.jsonl", "{\"step\":1}\n{\"step\":2}\n{\"step\":3,\"tra");
  std::vector<std::string> warnings;
  const auto warn = [&warnings](const std::string& w) { warnings.push_back(w); };
  CHECK(read_jsonl_lines(dir / "torn.jsonl", warn).size() == 2);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("torn last line") && Catch::Contains("torn.jsonl:3"));
  lmf::test::write_file(dir / "middle.jsonl", "{\"step\":1}\nnot json\n{\"step\":3}\n");
  CHECK_THROWS_WITH(read_jsonl_lines(dir / "middle.jsonl"), Catch::Contains("middle.jsonl:2: not a JSON object"));
  CHECK(read_jsonl_lines(dir / "middle.jsonl", warn, true).size() == 2);
  // Nesting deeper than any line of ours is refused without walking it.
  lmf::test::write_file(dir / "deep.jsonl", std::string(100000, '[') + "\n{\"step\":1}\n");
  CHECK_THROWS_WITH(read_jsonl_lines(dir / "deep.jsonl"), Catch::Contains("deep.jsonl:1"));
}

TEST_CASE("resume keeps metrics.jsonl whole when its last line was torn") {
  const fs::path run = fresh_dir("metrics_torn_resume");
  Trainer(tiny_config(run, 4)).fit();
  {
    std::ofstream out(run / "metrics.jsonl", std::ios::app);
    out << "{\"step\": 5, \"train_lo";  // a write cut off by a crash
  }
  Trainer(tiny_config(run, 6)).fit();
  const auto lines = read_jsonl_lines(run / "metrics.jsonl");  // throws on any damaged line
  CHECK(nlohmann::json::parse(lines.back()).at("event") == "final");
  for (const auto& line : lines_of(run / "metrics.jsonl")) CHECK(line.find("train_lo\"") == std::string::npos);
}

// --- damaged trainer states -------------------------------------------------------------------

TEST_CASE("TrainState::from_json refuses negative, absurd and inconsistent values naming the field") {
  TrainState s;
  s.step = 8;
  s.recent_losses = {1.f, 2.f};
  const auto with = [&s](const std::string& key, const nlohmann::json& value) {
    auto j = nlohmann::json::parse(s.to_json());
    j[key] = value;
    return j.dump();
  };
  CHECK(TrainState::from_json(s.to_json(), "x").step == 8);
  CHECK_THROWS_WITH(TrainState::from_json(with("step", -1), "state.json"),
                    Catch::Contains("state.json") && Catch::Contains("step: -1 is out of range"));
  CHECK_THROWS_WITH(TrainState::from_json(with("step", int64_t(1) << 62), "x"), Catch::Contains("step: "));
  CHECK_THROWS_WITH(TrainState::from_json(with("step", "8"), "x"), Catch::Contains("step: expected an integer"));
  CHECK_THROWS_WITH(TrainState::from_json(with("best_step", 9), "x"), Catch::Contains("best_step"));
  CHECK_THROWS_WITH(TrainState::from_json(with("elapsed_s", -3.0), "x"), Catch::Contains("elapsed_s"));
  CHECK_THROWS_WITH(TrainState::from_json(with("recent_losses", {1.0, nullptr}), "x"), Catch::Contains("recent_losses"));
  CHECK_THROWS_WITH(TrainState::from_json("{\"version\": 1, \"step\": ", "x"), Catch::Contains("x: "));
}

TEST_CASE("a damaged newest trainer_state.json names the newest intact checkpoint, which resumes") {
  const fs::path run = fresh_dir("damaged_state");
  Trainer(tiny_config(run, 6)).fit();
  const fs::path newest = run / "checkpoints" / "step_00000006", older = run / "checkpoints" / "step_00000004";
  const std::string good = lmf::test::slurp(newest / "trainer_state.json");
  auto j = nlohmann::json::parse(good);
  for (const auto& bad : {nlohmann::json(-5), nlohmann::json(int64_t(1) << 62), nlohmann::json(4)}) {
    j["step"] = bad;
    lmf::test::write_file(newest / "trainer_state.json", j.dump());
    std::string message;
    try {
      Trainer(tiny_config(run, 8)).fit();
    } catch (const lmf::Error& e) {
      message = e.what();
    }
    INFO(message);
    CHECK(message.find(newest.string()) != std::string::npos);
    CHECK(message.find("newest intact checkpoint is " + older.string()) != std::string::npos);
  }
  CHECK_THROWS_WITH(Checkpointer::read_state(newest), Catch::Contains("step 4 does not match its directory step_00000006"));
  CHECK(Checkpointer(run).newest_intact() == older);
  // The named checkpoint resumes.
  Config c = tiny_config(run, 8);
  c.checkpoint.resume = ResumeMode::path;
  c.checkpoint.resume_path = older.string();
  CHECK(Trainer(c).fit().steps == 8);
}

// --- the config's kinds --------------------------------------------------------------------------

TEST_CASE("Config: kinds are enums, written back in their YAML spellings") {
  const std::string yaml = "data: {train: x.bin, order: sequential}\n"
                           "run: {device: 'cuda:1', precision: fp32, matmul_precision: bf16}\n"
                           "training: {max_steps: 3, schedule: constant, on_nan: skip}\n"
                           "checkpoint: {resume: /some/ckpt, force_fresh: true}\n"
                           "distributed: {backend: mpi}\nlogging: {progress: false}\n";
  const Config c = Config::parse(yaml, "k.yaml");
  CHECK(c.data.order == lmf::data::LoaderOrder::sequential);
  CHECK(c.run.device.kind == DeviceKind::cuda);
  CHECK(c.run.device.index == 1);
  CHECK(c.run.matmul_precision == Precision::bf16);
  CHECK(c.training.schedule == lmf::optim::ScheduleKind::constant);
  CHECK(c.training.on_nan == NanPolicy::skip);
  CHECK(c.checkpoint.resume == ResumeMode::path);
  CHECK(c.checkpoint.resume_path == "/some/ckpt");
  CHECK(c.checkpoint.force_fresh);
  CHECK(c.distributed.backend == CommBackend::mpi);
  CHECK(c.logging.progress == ProgressMode::none);  // `false`, the YAML boolean, means none
  const Config back = Config::parse(c.to_yaml(), "back.yaml");
  CHECK(back.to_yaml() == c.to_yaml());
  CHECK(back.run.device == c.run.device);
  CHECK(Config::parse("data: {train: x}\ntraining: {max_steps: 1}\nrun: {device: cuda}\n", "d").run.device.str() == "cuda");
  CHECK_THROWS_WITH(Config::parse(yaml + "early_stopping: {metric: loss}\n", "k.yaml"),
                    Catch::Contains("early_stopping.metric: must be one of val_loss, got 'loss'"));
  CHECK_THROWS_WITH(Config::parse("data: {train: x}\ntraining: {max_steps: 1}\nlogging: {progress: true}\n", "p.yaml"),
                    Catch::Contains("logging.progress: must be one of auto, bar, plain, none"));
}
