// The trainer with run.device: cuda against the same run on the CPU: per-step losses, gradient
// norms and validation losses follow the CPU's; checkpoints move between the devices in both
// directions (weights bit for bit, data position, RNG and moments restored); a resumed GPU run is
// bit-identical to an uninterrupted one.
// The GPU multiplies matrices with bf16 operands (fp32 accumulation), so GPU and CPU runs are not
// bit-equal. The error budget is measured, not picked: a CPU run whose initial weights are rounded
// to bf16 shows how far a bf16-sized perturbation moves this training run; the GPU may move up to
// kActivationFactor times as far (the factor of tests/cuda/test_gpt.cpp for activations, which the
// GPU rounds as well), and never less than kFloor relative.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "e2e/cli_run.h"
#include "train/word_corpus.h"
#include "lmforge/autograd.h"
#include "lmforge/data/prepare.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/train/trainer.h"

namespace fs = std::filesystem;
using lmf::Tensor;
using lmf::train::Callbacks;
using lmf::train::Config;
using lmf::train::StepMetrics;
using lmf::train::Trainer;

namespace {

constexpr double kActivationFactor = 4;
constexpr double kFloor = 1e-3;
constexpr int64_t kSteps = 20;

fs::path fresh_dir(const std::string& name) { return lmf::test::work_dir("cuda-trainer", name); }

const fs::path& corpus() {
  static const fs::path data =
      lmf::test::prepare_char_corpus(fresh_dir("corpus"), lmf::test::generated_text(600, 23));
  return data;
}

// Two layers, HS 32, micro-batches of 4 x 32 tokens accumulated twice, dropout on (its masks are
// the same on both devices), validation every 10 steps, a checkpoint every 10.
Config config_on(const std::string& device, const fs::path& out_dir, int64_t max_steps) {
  Config c;
  c.run.out_dir = out_dir.string();
  c.run.seed = 11;
  c.run.threads = 2;
  c.run.device = lmf::train::DeviceSetting::parse(device);
  c.data.train = corpus().string();
  c.model.n_layer = 2;
  c.model.n_head = 2;
  c.model.n_embd = 64;
  c.model.block_size = 32;
  c.model.dropout = 0.1f;
  c.training.batch_size = 4;
  c.training.grad_accum_steps = 2;
  c.training.max_steps = max_steps;
  c.training.lr = 3e-3f;
  c.training.min_lr = 3e-4f;
  c.training.warmup_steps = 3;
  c.eval.interval = 10;
  c.eval.batches = 3;
  c.checkpoint.interval = 10;
  c.checkpoint.keep_last = 100;
  c.logging.interval = 1;
  c.logging.progress = lmf::train::ProgressMode::none;
  c.validate();
  return c;
}

struct Curve {
  std::vector<float> loss;           // per step
  std::vector<double> grad_norm;     // per step, before clipping
  std::vector<float> val_loss;       // per evaluation
};

Callbacks recording(Curve& curve, int64_t stop_at = -1) {
  Callbacks cb;
  cb.on_step = [&curve, stop_at](const StepMetrics& m) {
    curve.loss.push_back(m.train_loss);
    curve.grad_norm.push_back(m.grad_norm);
    return m.step != stop_at;
  };
  cb.on_eval = [&curve](int64_t, float val) { curve.val_loss.push_back(val); };
  return cb;
}

Curve run(const Config& config, std::unique_ptr<lmf::nn::GPT> model = nullptr) {
  Curve curve;
  if (model) {
    Trainer(config, std::move(model), recording(curve)).fit();
  } else {
    Trainer(config, recording(curve)).fit();
  }
  return curve;
}

// The CPU run of `config`, but starting from its initial weights rounded to bf16.
Curve run_from_rounded_weights(const Config& config) {
  const lmf::nn::GPTConfig shape = dynamic_cast<lmf::nn::GPT&>(Trainer(config).model()).config();
  auto model = std::make_unique<lmf::nn::GPT>(shape, config.run.seed);  // the trainer's own initialisation
  lmf::NoGradGuard no_grad;
  for (auto& [name, t] : model->named_parameters()) {
    Tensor p = t;
    p.copy_(t.to(lmf::DType::bf16));
  }
  return run(config, std::move(model));
}

// Per-element bounds: kActivationFactor times the largest distance the rounded run has reached
// so far (a perturbation, once made, persists), at least kFloor relative to the reference.
template <class T>
std::vector<double> budget(const std::vector<T>& reference, const std::vector<T>& rounded) {
  REQUIRE(reference.size() == rounded.size());
  std::vector<double> out;
  double worst = 0;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    worst = std::max(worst, std::fabs(double(rounded[i]) - double(reference[i])));
    out.push_back(std::max(kActivationFactor * worst, kFloor * std::fabs(double(reference[i]))));
  }
  return out;
}

template <class T>
void check_follows(const char* what, const std::vector<T>& gpu, const std::vector<T>& cpu,
                   const std::vector<double>& bound, std::size_t first = 0) {
  REQUIRE(gpu.size() + first == cpu.size());
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    INFO(what << " " << i + first << ": gpu " << gpu[i] << " cpu " << cpu[i + first] << " bound "
              << bound[i + first]);
    CHECK(std::isfinite(double(gpu[i])));
    CHECK(std::fabs(double(gpu[i]) - double(cpu[i + first])) <= bound[i + first]);
  }
}

std::vector<float> flat_weights(const lmf::nn::Module& model) {
  std::vector<float> out;
  for (const auto& [name, t] : model.named_parameters()) {
    const auto v = t.to_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// Names, dtypes and shapes of a safetensors file, and its metadata: its format, not its values.
std::string layout_of(const fs::path& file) {
  const auto st = lmf::io::read_safetensors(file);
  std::string out;
  for (const auto& [name, t] : st.tensors) out += name + ":" + lmf::dtype_name(t.dtype()) + lmf::shape_str(t.shape()) + ";";
  for (const auto& [key, value] : st.metadata) out += key + "=" + value + ";";
  return out;
}

struct Reference {
  Curve cpu, rounded;
  std::vector<double> loss_bound, norm_bound, val_bound;
};

const Reference& cpu_reference() {
  static const Reference ref = [] {
    Reference r;
    r.cpu = run(config_on("cpu", fresh_dir("ref_cpu"), kSteps));
    r.rounded = run_from_rounded_weights(config_on("cpu", fresh_dir("ref_rounded"), kSteps));
    r.loss_bound = budget(r.cpu.loss, r.rounded.loss);
    r.norm_bound = budget(r.cpu.grad_norm, r.rounded.grad_norm);
    r.val_bound = budget(r.cpu.val_loss, r.rounded.val_loss);
    return r;
  }();
  return ref;
}

// The resumed half of a run that switches devices at step 10: the weights it resumes with are
// the other device's bit for bit, and its steps 11 to 20 follow the uninterrupted CPU run.
void check_switch(const std::string& first_device, const std::string& second_device, const std::string& name) {
  const Reference& ref = cpu_reference();
  const fs::path dir = fresh_dir(name);
  std::vector<float> first_weights;
  {
    Trainer first(config_on(first_device, dir, 10));
    first.fit();
    first_weights = flat_weights(first.model());
  }
  CHECK(flat_weights(*lmf::io::load_gpt(dir / "checkpoints" / "step_00000010")) == first_weights);

  Curve second;
  std::vector<float> resumed_weights;
  std::vector<std::string> events;
  Trainer* trainer = nullptr;
  Callbacks cb = recording(second);
  cb.on_event = [&](const std::string& event, const std::string&) {
    events.push_back(event);
    if (event == "resume") resumed_weights = flat_weights(trainer->model());
  };
  Trainer resumed(config_on(second_device, dir, kSteps), cb);
  trainer = &resumed;
  const auto result = resumed.fit();
  CHECK(result.steps == kSteps);
  REQUIRE(!events.empty());
  CHECK(events.front() == "resume");
  CHECK(resumed_weights == first_weights);  // bit for bit across the devices
  check_follows("loss", second.loss, ref.cpu.loss, ref.loss_bound, 10);
  check_follows("grad_norm", second.grad_norm, ref.cpu.grad_norm, ref.norm_bound, 10);
}

}  // namespace

TEST_CASE("training on the GPU follows the CPU run step by step", "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  const Reference& ref = cpu_reference();
  REQUIRE(ref.cpu.loss.size() == static_cast<std::size_t>(kSteps));
  // The budget must be able to fail: the rounded run differs from the CPU's, but by little.
  CHECK(ref.rounded.loss != ref.cpu.loss);
  CHECK(ref.loss_bound.back() < 0.05 * ref.cpu.loss.back());

  const fs::path dir = fresh_dir("gpu");
  Curve gpu;
  {
    Trainer trainer(config_on("cuda", dir, kSteps), recording(gpu));
    CHECK(trainer.model().slab()->device().is_cuda());
    trainer.fit();
    CHECK(trainer.model().slab()->device().is_cuda());
  }
  check_follows("loss", gpu.loss, ref.cpu.loss, ref.loss_bound);
  check_follows("grad_norm", gpu.grad_norm, ref.cpu.grad_norm, ref.norm_bound);
  check_follows("val_loss", gpu.val_loss, ref.cpu.val_loss, ref.val_bound);
  CHECK(gpu.loss.back() < 0.7f * gpu.loss.front());

  // The files a GPU run writes are the CPU's format: same tensors, dtypes, shapes and metadata.
  const fs::path cpu_dir = fs::path(LMF_BINARY_DIR) / "test-data" / "cuda-trainer" / "ref_cpu";
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    INFO(file);
    CHECK(layout_of(dir / "final" / file) == layout_of(cpu_dir / "final" / file));
    CHECK(layout_of(dir / "best" / file) == layout_of(cpu_dir / "best" / file));
  }
  CHECK(fs::exists(dir / "checkpoints" / "step_00000010" / "trainer_state.json"));
}

TEST_CASE("a GPU checkpoint resumes on the CPU with the GPU's weights and continues the run", "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  check_switch("cuda", "cpu", "gpu_then_cpu");
}

TEST_CASE("a CPU checkpoint resumes on the GPU with the CPU's weights and continues the run", "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  check_switch("cpu", "cuda", "cpu_then_gpu");
}

TEST_CASE("a resumed GPU run is bit-identical to an uninterrupted one", "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  const fs::path dir_a = fresh_dir("exact_a"), dir_b = fresh_dir("exact_b");
  const Curve a = run(config_on("cuda", dir_a, kSteps));
  Curve b;
  // Stopped between checkpoints and evaluations: the stop writes its own checkpoint.
  const auto first = Trainer(config_on("cuda", dir_b, kSteps), recording(b, 6)).fit();
  REQUIRE(first.stop_reason == "callback");
  Trainer(config_on("cuda", dir_b, kSteps), recording(b)).fit();
  CHECK(b.loss == a.loss);
  CHECK(b.grad_norm == a.grad_norm);
  CHECK(b.val_loss == a.val_loss);
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    INFO(file);
    CHECK(lmf::test::slurp(dir_a / "final" / file) == lmf::test::slurp(dir_b / "final" / file));
  }
}
