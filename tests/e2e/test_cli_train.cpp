// `lmforge train` and `lmforge plot` driven like a user drives them: every kind of bad input gives
// one "lmforge: error: ..." line and a non-zero exit; SIGTERM saves and exits 0; kill -9 at any
// moment leaves every checkpoint loadable and the run resumable; metrics.jsonl and the plot.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "e2e/cli_run.h"
#include "lmforge/core/device.h"
#include "lmforge/io/checkpoint.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using lmf::test::lmforge;
using lmf::test::quote;
using lmf::test::require_clean_error;
using lmf::test::RunResult;
using lmf::test::slurp;
using lmf::test::write_file;

extern char** environ;

namespace {

fs::path work_dir(const std::string& name) { return lmf::test::work_dir("cli-train", name); }

// Starts `lmforge train CONFIG ARGS...` as a child (stdout/stderr to files in `dir`).
pid_t spawn_train(const fs::path& dir, const fs::path& config, std::vector<std::string> extra = {}) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, (dir / "stdout.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, (dir / "stderr.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> args = {LMF_CLI, "train", config.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, LMF_CLI, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  return pid;
}

int wait_exit(pid_t pid, int* signal_number = nullptr) {
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  if (signal_number) *signal_number = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A char-level corpus prepared once with `lmforge prepare`.
const fs::path& prepared_data() {
  static const fs::path data = [] {
    const fs::path dir = work_dir("data");
    static const char* words[] = {"alpha", "beta", "gamma", "delta", "rho", "sigma", "tau", "omega"};
    std::string text;
    uint32_t state = 11;
    for (int i = 0; i < 3000; ++i) {
      state = state * 1664525u + 1013904223u;
      text += words[(state >> 16) % 8];
      text += i % 9 == 8 ? "\n" : " ";
    }
    write_file(dir / "corpus.txt", text);
    const RunResult r = lmforge(dir, "prepare --input " + quote((dir / "corpus.txt").string()) + " --out " +
                                   quote((dir / "data").string()) + " --tokenizer char");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return dir / "data";
  }();
  return data;
}

std::string base_yaml(const fs::path& out_dir) {
  return "run:\n"
         "  out_dir: " + out_dir.string() + "\n"
         "  seed: 3\n"
         "  threads: 1\n"
         "data:\n"
         "  train: " + prepared_data().string() + "\n"
         "model:\n"
         "  n_layer: 1\n"
         "  n_head: 2\n"
         "  n_embd: 32\n"
         "  block_size: 16\n"
         "  dropout: 0.0\n"
         "training:\n"
         "  batch_size: 4\n"
         "  max_steps: 6\n"
         "  lr: 0.003\n"
         "  min_lr: 0.0003\n"
         "  warmup_steps: 2\n"
         "eval:\n"
         "  interval: 3\n"
         "  batches: 2\n"
         "checkpoint:\n"
         "  interval: 3\n"
         "logging:\n"
         "  interval: 1\n"
         "  progress: plain\n";
}

// The 1-based line of `needle` in `text` (from the test's own YAML, not from the program).
int line_of(const std::string& text, const std::string& needle) {
  const auto pos = text.find(needle);
  REQUIRE(pos != std::string::npos);
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(pos), '\n'));
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  REQUIRE(pos != std::string::npos);
  return text.replace(pos, from.size(), to);
}

fs::path write_config(const fs::path& dir, const std::string& yaml) {
  const fs::path path = dir / "cfg.yaml";
  write_file(path, yaml);
  return path;
}

std::vector<json> metrics_lines(const fs::path& run_dir) {
  std::vector<json> out;
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));  // throws if corrupt
  return out;
}

int64_t last_train_step(const fs::path& run_dir) {
  int64_t step = 0;
  for (const auto& j : metrics_lines(run_dir))
    if (j.contains("train_loss")) step = std::max(step, j.at("step").get<int64_t>());
  return step;
}

std::vector<fs::path> step_checkpoints(const fs::path& run_dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(run_dir / "checkpoints")) return out;
  for (const auto& e : fs::directory_iterator(run_dir / "checkpoints")) {
    const std::string name = e.path().filename().string();
    if (name.size() == 13 && name.rfind("step_", 0) == 0 &&
        name.find_first_not_of("0123456789", 5) == std::string::npos)
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Polls until `ready` holds (or a timeout, which fails the test).
template <class Pred>
void wait_for(Pred ready, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!ready()) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

TEST_CASE("train: an unknown key names the key, its line and the closest valid key") {
  const fs::path dir = work_dir("unknown_key");
  const std::string yaml = replaced(base_yaml(dir / "run"), "  lr: 0.003", "  lrr: 0.003");
  const RunResult r = lmforge(dir, "train " + quote(write_config(dir, yaml).string()));
  require_clean_error(r, {"training.lrr", "cfg.yaml:" + std::to_string(line_of(yaml, "lrr")), "'training.lr'"});
  CHECK_FALSE(fs::exists(dir / "run"));
}

TEST_CASE("train: a value of the wrong type names the key, its line and what was expected") {
  const fs::path dir = work_dir("wrong_type");
  const std::string yaml = replaced(base_yaml(dir / "run"), "  batch_size: 4", "  batch_size: four");
  const RunResult r = lmforge(dir, "train " + quote(write_config(dir, yaml).string()));
  require_clean_error(r, {"training.batch_size", "cfg.yaml:" + std::to_string(line_of(yaml, "batch_size")),
                          "integer", "four"});
}

TEST_CASE("train: an out-of-range value names the key and the allowed range") {
  const fs::path dir = work_dir("out_of_range");
  const std::string yaml = replaced(base_yaml(dir / "run"), "  dropout: 0.0", "  dropout: 1.5");
  const RunResult r = lmforge(dir, "train " + quote(write_config(dir, yaml).string()));
  require_clean_error(r, {"model.dropout", "1.5", "cfg.yaml:" + std::to_string(line_of(yaml, "dropout"))});
}

TEST_CASE("train: a missing data file names data.train and the path") {
  const fs::path dir = work_dir("missing_data");
  const std::string missing = (dir / "no_such_dir" / "train.bin").string();
  const std::string yaml = replaced(base_yaml(dir / "run"), "  train: " + prepared_data().string(), "  train: " + missing);
  const RunResult r = lmforge(dir, "train " + quote(write_config(dir, yaml).string()));
  require_clean_error(r, {"data.train", missing});
}

TEST_CASE("train: malformed YAML names the file and line") {
  const fs::path dir = work_dir("malformed");
  const std::string yaml = replaced(base_yaml(dir / "run"), "  lr: 0.003", "  lr: [0.003");
  const RunResult r = lmforge(dir, "train " + quote(write_config(dir, yaml).string()));
  require_clean_error(r, {"cfg.yaml:", "YAML"});
}

TEST_CASE("train: a missing config file is one clear error") {
  const fs::path dir = work_dir("missing_config");
  const RunResult r = lmforge(dir, "train " + quote((dir / "nope.yaml").string()));
  require_clean_error(r, {"nope.yaml"});
}

TEST_CASE("train: bad command-line overrides are named with the override") {
  const fs::path dir = work_dir("bad_override");
  const fs::path cfg = write_config(dir, base_yaml(dir / "run"));
  require_clean_error(lmforge(dir, "train " + quote(cfg.string()) + " training.lr=fast"),
                      {"training.lr=fast", "number"});
  require_clean_error(lmforge(dir, "train " + quote(cfg.string()) + " training.lrr=0.1"),
                      {"training.lrr", "'training.lr'"});
  require_clean_error(lmforge(dir, "train " + quote(cfg.string()) + " training.lr"), {"KEY=VALUE"});
  require_clean_error(lmforge(dir, "train " + quote(cfg.string()) + " model.n_layer=0"), {"model.n_layer", "0"});
}

TEST_CASE("train: run.device cuda without a GPU is one clear error") {
  const fs::path dir = work_dir("device");
  const fs::path cfg = write_config(dir, base_yaml(dir / "run"));
  require_clean_error(lmforge(dir, "train " + quote(cfg.string()) + " run.precision=bf16s"),
                      {"run.precision", "bf16"});
  if (lmf::cuda_available()) {
    WARN("the GPU half is skipped: a CUDA GPU is visible");
    return;
  }
  require_clean_error(lmforge(dir, "train " + quote(cfg.string()) + " run.device=cuda"),
                      {"run.device: cuda", "no CUDA GPU"});
  require_clean_error(lmforge(dir, "train " + quote(cfg.string()) + " run.device=cuda:2"),
                      {"run.device: cuda:2", "no CUDA GPU"});
  CHECK_FALSE(fs::exists(dir / "run" / "metrics.jsonl"));  // refused before any work
}

TEST_CASE("train: a tokenizer larger than model.vocab_size is a vocabulary mismatch") {
  const fs::path dir = work_dir("vocab_mismatch");
  const fs::path cfg = write_config(dir, base_yaml(dir / "run"));
  const RunResult r = lmforge(dir, "train " + quote(cfg.string()) + " model.vocab_size=5");
  require_clean_error(r, {"vocabulary", "5"});
}

TEST_CASE("train: block_size beyond an init checkpoint's positions is an error; within them fine-tunes") {
  const fs::path dir = work_dir("init_block");
  const fs::path cfg = write_config(dir, base_yaml(dir / "base"));
  const RunResult base = lmforge(dir, "train " + quote(cfg.string()) + " training.max_steps=2");
  INFO(base.err);
  REQUIRE(base.exit_code == 0);
  const std::string init = (dir / "base" / "final").string();
  const RunResult bad = lmforge(dir, "train " + quote(cfg.string()) + " model.init=" + init + " model.block_size=32 run.out_dir=" +
                                   (dir / "ft").string());
  require_clean_error(bad, {"block_size", "32", "16"});
  const RunResult good = lmforge(dir, "train " + quote(cfg.string()) + " model.init=" + init + " model.block_size=8 run.out_dir=" +
                                    (dir / "ft").string() + " training.max_steps=2");
  INFO(good.err);
  CHECK(good.exit_code == 0);
}

TEST_CASE("train: metrics.jsonl has one JSON object per line with the documented keys") {
  const fs::path dir = work_dir("metrics");
  const fs::path run = dir / "run";
  const RunResult r = lmforge(dir, "train " + quote(write_config(dir, base_yaml(run)).string()));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  int train = 0, eval = 0, events = 0;
  for (const auto& j : metrics_lines(run)) {
    INFO(j.dump());
    REQUIRE(j.is_object());
    REQUIRE(j.contains("step"));
    if (j.contains("train_loss")) {
      ++train;
      for (const char* key : {"lr", "grad_norm", "tokens_per_sec", "elapsed_s"}) CHECK(j.contains(key));
      CHECK(j.at("train_loss").get<double>() > 0);
      CHECK(j.at("step").get<int64_t>() == train);  // logging.interval 1: every step, in order
    } else if (j.contains("val_loss")) {
      ++eval;
      CHECK(j.at("step").get<int64_t>() % 3 == 0);
    } else {
      CHECK(j.contains("event"));
      ++events;
    }
  }
  CHECK(train == 6);
  CHECK(eval == 2);
  CHECK(events >= 1);
}

TEST_CASE("plot: writes a PNG of a run, and a directory without metrics is one clear error") {
  const fs::path dir = work_dir("plot");
  const fs::path run = dir / "run";
  REQUIRE(lmforge(dir, "train " + quote(write_config(dir, base_yaml(run)).string())).exit_code == 0);
  const fs::path png = dir / "loss.png";
  const RunResult r = lmforge(dir, "plot " + quote(run.string()) + " -o " + quote(png.string()));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::string bytes = slurp(png);
  REQUIRE(bytes.size() > 8);
  CHECK(bytes.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
  // No temporary data files are left beside the output.
  for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().extension() != ".dat");

  fs::create_directories(dir / "empty");
  require_clean_error(lmforge(dir, "plot " + quote((dir / "empty").string())), {"metrics.jsonl"});
  require_clean_error(lmforge(dir, "plot " + quote(run.string()) + " -o " + quote((dir / "loss.gif").string())),
                      {".png"});
}

TEST_CASE("train: SIGTERM mid-run saves a checkpoint, exits 0, and the same command resumes") {
  const fs::path dir = work_dir("sigterm");
  const fs::path run = dir / "run";
  std::string yaml = replaced(base_yaml(run), "  max_steps: 6", "  max_steps: 100000");
  yaml = replaced(yaml, "eval:\n  interval: 3", "eval:\n  interval: 0");
  yaml = replaced(yaml, "checkpoint:\n  interval: 3", "checkpoint:\n  interval: 0");
  const fs::path cfg = write_config(dir, yaml);
  const pid_t pid = spawn_train(dir, cfg);
  wait_for([&] { return fs::exists(run / "metrics.jsonl") && last_train_step(run) >= 3; }, 60);
  REQUIRE(kill(pid, SIGTERM) == 0);
  REQUIRE(wait_exit(pid) == 0);
  const std::string err = slurp(dir / "stderr.txt");
  INFO(err);
  CHECK(err.find("interrupted") != std::string::npos);
  const auto saved = step_checkpoints(run);
  REQUIRE(saved.size() == 1);
  const int64_t stopped_at = last_train_step(run);
  CHECK(saved.back().filename().string() == "step_" + std::string(8 - std::to_string(stopped_at).size(), '0') +
                                               std::to_string(stopped_at));
  CHECK(lmf::io::load_gpt(saved.back()));

  // The same command (with a reachable end) continues from there.
  const RunResult resumed = lmforge(dir, "train " + quote(cfg.string()) + " training.max_steps=" + std::to_string(stopped_at + 3));
  INFO(resumed.err);
  REQUIRE(resumed.exit_code == 0);
  CHECK(last_train_step(run) == stopped_at + 3);
  int resume_events = 0;
  for (const auto& j : metrics_lines(run)) resume_events += j.value("event", "") == "resume";
  CHECK(resume_events == 1);
}

TEST_CASE("train: kill -9 at any moment never corrupts a checkpoint, and resume continues") {
  const fs::path dir = work_dir("kill9");
  const fs::path run = dir / "run";
  std::string yaml = replaced(base_yaml(run), "  max_steps: 6", "  max_steps: 100000");
  yaml = replaced(yaml, "checkpoint:\n  interval: 3", "checkpoint:\n  interval: 1\n  keep_last: 2");
  const fs::path cfg = write_config(dir, yaml);
  // Moments spread over start-up, stepping, checkpoint writing and pruning.
  const int delays_ms[] = {0, 40, 90, 160, 230, 310, 420};
  int64_t newest = 0;
  for (int delay : delays_ms) {
    const pid_t pid = spawn_train(dir, cfg);
    // Let the first run get past its first checkpoint so later kills land on a live run.
    if (newest == 0) wait_for([&] { return !step_checkpoints(run).empty(); }, 60);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    REQUIRE(kill(pid, SIGKILL) == 0);
    int sig = 0;
    wait_exit(pid, &sig);
    INFO("killed after " << delay << " ms; stderr: " << slurp(dir / "stderr.txt"));
    CHECK((sig == SIGKILL || sig == 0));
    const auto dirs = step_checkpoints(run);
    REQUIRE(!dirs.empty());
    for (const auto& d : dirs) {
      INFO(d.string());
      CHECK_NOTHROW(lmf::io::load_gpt(d));
      CHECK_NOTHROW(json::parse(slurp(d / "trainer_state.json")));
      CHECK(fs::exists(d / "optimizer.safetensors"));
    }
    const std::string name = dirs.back().filename().string();
    const int64_t step = std::stoll(name.substr(5));
    CHECK(step >= newest);  // a kill never loses the newest complete checkpoint
    newest = step;
  }
  // A final resume runs to completion from the newest checkpoint.
  const RunResult finish = lmforge(dir, "train " + quote(cfg.string()) + " training.max_steps=" + std::to_string(newest + 2));
  INFO(finish.err);
  REQUIRE(finish.exit_code == 0);
  CHECK(finish.err.find("resume") != std::string::npos);
  CHECK(last_train_step(run) == newest + 2);
  for (const auto& j : metrics_lines(run)) CHECK(j.contains("step"));  // no torn lines survive a resume
}
