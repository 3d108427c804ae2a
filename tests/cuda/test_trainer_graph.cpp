// The trainer with run.cuda_graph: true against the same run with false, from the same seed: the
// graph run's steps after the capture are replays of one recorded step (its batch copied into
// static device tensors, lr and bias corrections read from device memory, the record ring's slot
// from a device counter), and they must log the eager run's losses, norms and lrs and leave its
// weights. Also: f32 and bf16 mixed precision (the bf16 weight copies are refreshed inside the
// graph), host waits that do not grow with the replayed steps, and a resumed graph run identical to
// an uninterrupted one (the graph is recorded again after the load).
//
// Tolerance: none, bit for bit. A replay launches the kernels the eager step launched, in the same
// order, on the same values (the tests of lmf::CudaGraph, tests/cuda/test_cuda_graph.cpp, hold a
// custom loop to the same); only the launching differs. A control pair of eager runs must agree
// bit for bit first, so a failure below is the graph's, not a non-deterministic kernel's.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "e2e/cli_run.h"
#include "train/word_corpus.h"
#include "lmforge/train/trainer.h"

namespace fs = std::filesystem;
using lmf::train::Config;
using lmf::train::StepMetrics;

namespace {

fs::path fresh_dir(const std::string& name) { return lmf::test::work_dir("cuda-trainer-graph", name); }

const fs::path& corpus() {
  static const fs::path data =
      lmf::test::prepare_char_corpus(fresh_dir("corpus"), lmf::test::generated_text(600, 31));
  return data;
}

// A tiny GPT-2 (2 layers, HS 32), one micro-batch of 4 x 32 tokens per step, no dropout (what a
// capture needs), a clip below the early norms (so the device's clip factor is in play) and a
// warm-up then cosine lr (so every replay needs a new lr).
Config config_for(const fs::path& out_dir, bool graph, int64_t steps, int64_t log_every) {
  Config c;
  c.run.out_dir = out_dir.string();
  c.run.seed = 7;
  c.run.device = lmf::train::DeviceSetting::parse("cuda");
  c.run.cuda_graph = graph;
  c.data.train = corpus().string();
  c.model.n_layer = 2;
  c.model.n_head = 2;
  c.model.n_embd = 64;
  c.model.block_size = 32;
  c.model.dropout = 0.f;
  c.training.batch_size = 4;
  c.training.grad_accum_steps = 1;
  c.training.max_steps = steps;
  c.training.lr = 3e-3f;
  c.training.min_lr = 3e-4f;
  c.training.warmup_steps = 3;
  c.training.grad_clip = 0.05f;
  c.eval.interval = 0;
  c.checkpoint.interval = 0;
  c.checkpoint.keep_last = 100;
  c.logging.interval = log_every;
  c.logging.progress = lmf::train::ProgressMode::none;
  c.validate();
  return c;
}

struct Run {
  std::vector<StepMetrics> steps;
  std::vector<std::pair<std::string, std::string>> events;
  std::vector<float> weights;
  int64_t host_syncs = 0;  // during fit()
};

// Trains `config`; stops (through the callback, which saves a checkpoint) after `stop_after` steps
// when that is positive.
Run train(const Config& config, int64_t stop_after = 0) {
  Run out;
  lmf::train::Callbacks cb;
  cb.on_step = [&](const StepMetrics& m) {
    out.steps.push_back(m);
    return stop_after <= 0 || m.step < stop_after;
  };
  cb.on_event = [&](const std::string& name, const std::string& detail) { out.events.emplace_back(name, detail); };
  lmf::train::Trainer trainer(config, cb);
  const int64_t before = lmf::cuda_host_syncs();
  trainer.fit();
  out.host_syncs = lmf::cuda_host_syncs() - before;
  for (const auto& [name, t] : trainer.model().named_parameters()) {
    const auto v = t.to_vector();
    out.weights.insert(out.weights.end(), v.begin(), v.end());
  }
  return out;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The one "cuda_graph" event of a run: the capture's, which must say it succeeded.
std::string graph_event(const Run& run) {
  std::string detail;
  int count = 0;
  for (const auto& [name, text] : run.events)
    if (name == "cuda_graph") detail = text, ++count;
  CHECK(count == 1);
  return detail;
}

// steps[i] of `graph` against steps[i] of `eager`, for the steps both logged from `first` on.
void check_same_steps(const Run& eager, const Run& graph, std::size_t first = 0) {
  REQUIRE(graph.steps.size() == eager.steps.size());
  for (std::size_t i = first; i < eager.steps.size(); ++i) {
    INFO("step " << eager.steps[i].step << ": eager loss " << eager.steps[i].train_loss << ", graph loss "
                 << graph.steps[i].train_loss);
    CHECK(graph.steps[i].step == eager.steps[i].step);
    CHECK(same_bits(graph.steps[i].train_loss, eager.steps[i].train_loss));
    CHECK(graph.steps[i].grad_norm == eager.steps[i].grad_norm);
    CHECK(same_bits(graph.steps[i].lr, eager.steps[i].lr));
    CHECK(!graph.steps[i].skipped);
  }
}

void check_graph_matches_eager(const std::string& precision) {
  auto make = [&](const std::string& name, bool graph) {
    Config c = config_for(fresh_dir(name + "_" + precision), graph, 10, 5);
    c.run.precision = precision == "bf16" ? lmf::train::Precision::bf16 : lmf::train::Precision::fp32;
    c.validate();
    return c;
  };
  const Run eager = train(make("eager", false));
  const Run control = train(make("control", false));
  REQUIRE(eager.steps.size() == 10);
  for (std::size_t i = 0; i < 10; ++i) REQUIRE(same_bits(control.steps[i].train_loss, eager.steps[i].train_loss));
  REQUIRE(same_bits(control.weights, eager.weights));

  const Run graph = train(make("graph", true));
  // Steps 1-2 eager (warm-up), 3 captured (the capture runs it), 4-10 replays.
  CHECK_THAT(graph_event(graph), Catch::StartsWith("step 3 captured"));
  check_same_steps(eager, graph);
  CHECK(same_bits(graph.weights, eager.weights));
  // The replays trained: the loss fell, and the clip was applied on the device.
  CHECK(graph.steps.back().train_loss < graph.steps.front().train_loss);
  CHECK(graph.steps.front().grad_norm > 0.05);
}

}  // namespace

TEST_CASE("run.cuda_graph: a replayed step logs the eager run's losses and leaves its weights, bit for bit",
          "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  SECTION("f32") { check_graph_matches_eager("fp32"); }
  SECTION("bf16 mixed precision") { check_graph_matches_eager("bf16"); }
}

TEST_CASE("run.cuda_graph: the host waits grow with the log lines, not with the replayed steps", "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  // The same 4 log lines over 8 steps (5 replays) and over 40 (37 replays): a wait per replay
  // (a read-back, a synchronising copy) would add at least 32 between the two.
  const Run short_run = train(config_for(fresh_dir("syncs_short"), true, 8, 2));
  const Run long_run = train(config_for(fresh_dir("syncs_long"), true, 40, 10));
  INFO("host waits: 8 steps " << short_run.host_syncs << ", 40 steps " << long_run.host_syncs);
  CHECK_THAT(graph_event(long_run), Catch::StartsWith("step 3 captured"));
  CHECK(long_run.steps.size() == 40);
  CHECK(long_run.host_syncs <= short_run.host_syncs + 4);
}

TEST_CASE("run.cuda_graph: a resumed run records the step again and continues bit for bit", "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  const Run whole = train(config_for(fresh_dir("whole"), true, 12, 1));
  REQUIRE(whole.steps.size() == 12);
  // Stopped after step 5 (a replay), which saves a checkpoint of step 5; the same config resumes it.
  const fs::path dir = fresh_dir("resumed");
  const Run first = train(config_for(dir, true, 12, 1), 5);
  REQUIRE(first.steps.size() == 5);
  const Run second = train(config_for(dir, true, 12, 1));
  REQUIRE(second.steps.size() == 7);
  // Steps 6-7 eager again, 8 captured, 9-12 replays.
  CHECK_THAT(graph_event(second), Catch::StartsWith("step 8 captured"));
  for (std::size_t i = 0; i < 7; ++i) {
    INFO("step " << whole.steps[5 + i].step);
    CHECK(second.steps[i].step == whole.steps[5 + i].step);
    CHECK(same_bits(second.steps[i].train_loss, whole.steps[5 + i].train_loss));
    CHECK(second.steps[i].grad_norm == whole.steps[5 + i].grad_norm);
  }
  CHECK(same_bits(second.weights, whole.weights));
}
