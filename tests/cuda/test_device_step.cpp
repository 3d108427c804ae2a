// A GPU step that never waits for the host. DeviceStep and AdamW::step(DeviceStep) against the host
// path (clip on the host, AdamW::step()) on one small module; the skip verdicts (a non-finite loss,
// a non-finite norm, a spike) leaving parameters, moments and the step count untouched; the record
// ring's write index on the device (a decision captured in a CUDA graph and replayed fills the next
// slots, wraps round, and a replay into a full ring is refused); and the
// trainer: a run read only at log intervals logs exactly the losses of a run read every step, a
// poisoned model skips every update on the device, and the number of host waits does not grow with
// the steps between two log lines (lmf::cuda_host_syncs, so a per-step read-back fails the test).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "e2e/cli_run.h"
#include "train/word_corpus.h"
#include "lmforge/autograd.h"
#include "lmforge/core/cuda_graph.h"
#include "lmforge/core/rng.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/linear.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/optim/clip.h"
#include "lmforge/optim/device_step.h"
#include "lmforge/train/trainer.h"

namespace fs = std::filesystem;
using lmf::Device;
using lmf::Tensor;
using lmf::optim::DeviceStep;
using Skip = lmf::optim::DeviceStep::Skip;

namespace {

constexpr float kMaxNorm = 0.5f;

// A Linear(8, 6) on the GPU with fixed gradients (scaled by `grad_scale`, so the clip is exercised).
struct Fixture {
  lmf::Generator gen{5};
  lmf::nn::Linear module{8, 6, true, gen, 0.5f};
  explicit Fixture(float grad_scale) {
    module.to(Device::cuda());
    const auto& slab = *module.slab();
    const auto g = lmf::test::random_vector(static_cast<std::size_t>(slab.numel()), 77, grad_scale);
    lmf::copy_bytes(slab.grads().raw_data(), slab.device(), g.data(), Device::cpu(), g.size() * sizeof(float));
  }
  std::vector<float> params() const { return module.slab()->params.to_vector(); }
};

void set_float(float* device_value, float value) {
  lmf::copy_bytes(device_value, Device::cuda(), &value, Device::cpu(), sizeof value);
}

// One host-path step and one device-path step from the same state; returns their parameters.
void check_same_update(float grad_scale, int steps) {
  Fixture host(grad_scale), device(grad_scale);
  lmf::optim::AdamWConfig config;
  config.lr = 1e-2f;
  config.weight_decay = 0.1f;
  lmf::optim::AdamW host_opt(host.module, config), device_opt(device.module, config);
  DeviceStep control(Device::cuda(), 4);
  double host_norm = 0;
  for (int i = 0; i < steps; ++i) {
    host_norm = lmf::optim::clip_grad_norm(*host.module.slab(), kMaxNorm);
    host_opt.step();
    set_float(control.loss_data(), 2.f);
    control.set_sum_squares(device.module.slab()->grads());
    control.decide(i, kMaxNorm, config.beta1, config.beta2);
    device_opt.step(control);
    // The device path leaves the gradients unscaled; the host path scaled them once, in place.
    if (i + 1 < steps) {
      const auto g = device.module.slab()->grads().to_vector();
      lmf::copy_bytes(host.module.slab()->grads().raw_data(), Device::cuda(), g.data(), Device::cpu(), g.size() * 4);
    }
  }
  const auto records = control.read();
  REQUIRE(records.size() == static_cast<std::size_t>(steps));
  CHECK(records.back().skip == Skip::none);
  CHECK(records.back().loss == 2.f);
  CHECK(records.back().grad_norm == Approx(host_norm).epsilon(1e-6));
  CHECK(control.applied() == steps);
  const auto a = host.params(), b = device.params();
  CHECK(lmf::test::max_abs_diff(a, b) <= 1e-6 * std::max(1.0, lmf::test::max_abs(a)));
  CHECK(lmf::test::max_abs_diff(host_opt.exp_avg_slab().to_vector(), device_opt.exp_avg_slab().to_vector()) <= 1e-7);
}

struct Snapshot {
  std::vector<float> p, m, v;
};
Snapshot snapshot(const Fixture& f, const lmf::optim::AdamW& opt) {
  return {f.params(), opt.exp_avg_slab().to_vector(), opt.exp_avg_sq_slab().to_vector()};
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// A verdict made on the device: the step is recorded with `expected` and changes nothing.
void check_skipped(float loss, float grad_value, Skip expected) {
  Fixture f(1.f);
  lmf::optim::AdamW opt(f.module, {});
  DeviceStep control(Device::cuda(), 2);
  control.set_spike_reference(2.0, 0.1, 3.f);  // a spike: loss above 2.3
  // One applied step first, so the moments are not all zero.
  set_float(control.loss_data(), 2.f);
  control.set_sum_squares(f.module.slab()->grads());
  control.decide(0, 0, 0.9f, 0.999f);
  opt.step(control);
  const Snapshot before = snapshot(f, opt);
  set_float(f.module.slab()->grads().data<float>() + 3, grad_value);
  set_float(control.loss_data(), loss);
  control.set_sum_squares(f.module.slab()->grads());
  control.decide(1, 0, 0.9f, 0.999f);
  opt.step(control);
  const auto records = control.read();
  REQUIRE(records.size() == 2);
  CHECK(records[0].skip == Skip::none);
  CHECK(records[1].skip == expected);
  CHECK(control.applied() == 1);
  const Snapshot after = snapshot(f, opt);
  CHECK(same_bits(after.p, before.p));
  CHECK(same_bits(after.m, before.m));
  CHECK(same_bits(after.v, before.v));
}

// --- the ring under a CUDA graph -------------------------------------------------------------------

// The loss and three gradients, each `value`, in static device tensors the decision reads.
struct StaticInputs {
  Tensor loss = Tensor::zeros({1}, lmf::DType::f32, Device::cuda());
  Tensor grads = Tensor::zeros({3}, lmf::DType::f32, Device::cuda());
  void set(float value) {
    loss.copy_(Tensor::from_vector(std::vector<float>{value}, {1}));
    grads.fill_(value);
  }
};

void check_records(const std::vector<DeviceStep::Record>& records, int64_t first_step) {
  for (std::size_t i = 0; i < records.size(); ++i) {
    const int64_t step = first_step + static_cast<int64_t>(i);
    const float value = static_cast<float>(step + 1);  // what StaticInputs::set was given for it
    INFO("record " << i);
    CHECK(records[i].step == step);
    CHECK(records[i].loss == value);
    CHECK(records[i].grad_norm == Approx(std::sqrt(3.0) * value).epsilon(1e-6));
    CHECK(records[i].skip == Skip::none);
  }
}

}  // namespace

TEST_CASE("a replayed DeviceStep::decide writes the next ring slot, and the host counts it", "[cuda][optim]") {
  LMF_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda();
  DeviceStep control(gpu, 4);
  StaticInputs in;
  auto decide = [&](int64_t step) {
    control.set_loss(in.loss, 1.f);
    control.set_sum_squares(in.grads);
    control.decide(step, 0, 0.9f, 0.999f);
  };
  in.set(1.f);
  decide(0);  // eager: the reduction's first launch
  lmf::CudaGraph graph;
  in.set(2.f);
  graph.capture(gpu, [&] { decide(1); });  // records step 1 and runs it once
  in.set(3.f);
  graph.replay();  // step 2
  in.set(4.f);
  graph.replay();  // step 3: the ring (4 slots) is full
  CHECK_THROWS_WITH(graph.replay(), Catch::Contains("read() first"));  // refused before the launch
  const auto first = control.read();
  REQUIRE(first.size() == 4);
  check_records(first, 0);
  // The device's write index wraps round: steps 4 and 5 go to slots 0 and 1.
  in.set(5.f);
  graph.replay();
  in.set(6.f);
  graph.replay();
  const auto second = control.read();
  REQUIRE(second.size() == 2);
  check_records(second, 4);
  CHECK(control.applied() == 6);
}

namespace {

// --- the trainer ---------------------------------------------------------------------------------

fs::path fresh_dir(const std::string& name) { return lmf::test::work_dir("cuda-device-step", name); }

const fs::path& corpus() {
  static const fs::path data =
      lmf::test::prepare_char_corpus(fresh_dir("corpus"), lmf::test::generated_text(600, 29));
  return data;
}

lmf::train::Config config_for(const fs::path& out_dir, int64_t steps, int64_t log_every) {
  lmf::train::Config c;
  c.run.out_dir = out_dir.string();
  c.run.seed = 3;
  c.run.device = lmf::train::DeviceSetting::parse("cuda");
  c.data.train = corpus().string();
  c.model.n_layer = 2;
  c.model.n_head = 2;
  c.model.n_embd = 64;
  c.model.block_size = 32;
  c.training.batch_size = 4;
  c.training.grad_accum_steps = 2;
  c.training.max_steps = steps;
  c.training.lr = 3e-3f;
  c.training.warmup_steps = 2;
  c.training.grad_clip = 0.05f;  // below the early norms: the device clip is in use
  c.training.spike_zscore = 6.f;
  c.eval.interval = 0;
  c.checkpoint.interval = 0;
  c.logging.interval = log_every;
  c.logging.progress = lmf::train::ProgressMode::none;
  c.validate();
  return c;
}

struct Run {
  std::vector<lmf::train::StepMetrics> steps;
  std::vector<std::string> events;
  std::vector<float> weights;
  int64_t host_syncs = 0;  // during fit()
};

Run train(const lmf::train::Config& config, std::unique_ptr<lmf::nn::GPT> model = nullptr) {
  Run out;
  lmf::train::Callbacks cb;
  cb.on_step = [&](const lmf::train::StepMetrics& m) {
    out.steps.push_back(m);
    return true;
  };
  cb.on_event = [&](const std::string& name, const std::string&) { out.events.push_back(name); };
  auto trainer = model ? std::make_unique<lmf::train::Trainer>(config, std::move(model), cb)
                       : std::make_unique<lmf::train::Trainer>(config, cb);
  const int64_t before = lmf::cuda_host_syncs();
  trainer->fit();
  out.host_syncs = lmf::cuda_host_syncs() - before;
  for (const auto& [name, t] : trainer->model().named_parameters()) {
    const auto v = t.to_vector();
    out.weights.insert(out.weights.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

TEST_CASE("AdamW::step(DeviceStep) updates as clip_grad_norm then AdamW::step() on the host", "[cuda][optim]") {
  LMF_SKIP_WITHOUT_GPU();
  SECTION("clipped") { check_same_update(4.f, 3); }
  SECTION("not clipped") { check_same_update(0.01f, 3); }
}

TEST_CASE("DeviceStep: a non-finite loss, a non-finite norm or a spike skips the whole update on the device",
          "[cuda][optim]") {
  LMF_SKIP_WITHOUT_GPU();
  check_skipped(NAN, 0.1f, Skip::non_finite_loss);
  check_skipped(INFINITY, 0.1f, Skip::non_finite_loss);
  check_skipped(2.f, INFINITY, Skip::non_finite_norm);
  check_skipped(2.5f, 0.1f, Skip::spike);
}

TEST_CASE("DeviceStep refuses more steps than its ring holds between reads", "[cuda][optim]") {
  LMF_SKIP_WITHOUT_GPU();
  DeviceStep control(Device::cuda(), 2);
  control.decide(0, 0, 0.9f, 0.999f);
  control.decide(1, 0, 0.9f, 0.999f);
  CHECK_THROWS_WITH(control.decide(2, 0, 0.9f, 0.999f), Catch::Contains("read() first"));
  CHECK(control.read().size() == 2);
  control.decide(2, 0, 0.9f, 0.999f);
  CHECK(control.read().front().step == 2);
}

TEST_CASE("a GPU run read every 5 steps logs exactly the losses of one read every step", "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  const Run every = train(config_for(fresh_dir("every"), 10, 1));
  const Run deferred = train(config_for(fresh_dir("deferred"), 10, 5));
  REQUIRE(every.steps.size() == 10);
  REQUIRE(deferred.steps.size() == 10);
  for (std::size_t i = 0; i < 10; ++i) {
    INFO("step " << i + 1);
    CHECK(deferred.steps[i].step == every.steps[i].step);
    CHECK(deferred.steps[i].train_loss == every.steps[i].train_loss);  // bit for bit
    CHECK(deferred.steps[i].grad_norm == every.steps[i].grad_norm);
    CHECK(deferred.steps[i].lr == every.steps[i].lr);
    CHECK(!deferred.steps[i].skipped);
  }
  CHECK(deferred.weights == every.weights);
  CHECK(every.steps.back().train_loss < every.steps.front().train_loss);
  CHECK(every.steps.front().grad_norm > 0.05);  // so the clip was applied on the device
}

TEST_CASE("a poisoned model skips every update on the device and reports each skip when read", "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  auto config = config_for(fresh_dir("poisoned"), 8, 4);
  config.training.on_nan = lmf::train::NanPolicy::skip;
  auto make = [&] {
    auto model = std::make_unique<lmf::nn::GPT>(
        dynamic_cast<lmf::nn::GPT&>(lmf::train::Trainer(config_for(fresh_dir("shape"), 1, 1)).model()).config(),
        config.run.seed);
    lmf::NoGradGuard no_grad;
    for (auto& [name, t] : model->named_parameters()) {
      if (name.find("ln_f.weight") != std::string::npos) {
        Tensor p = t;
        p.fill_(NAN);
      }
    }
    return model;
  };
  auto model = make();
  std::vector<float> initial;
  for (const auto& [name, t] : model->named_parameters()) {
    const auto v = t.to_vector();
    initial.insert(initial.end(), v.begin(), v.end());
  }
  const Run run = train(config, std::move(model));
  REQUIRE(run.steps.size() == 8);
  for (const auto& m : run.steps) {
    CHECK(m.skipped);
    CHECK(std::isnan(m.train_loss));
  }
  int skips = 0;
  for (const auto& e : run.events) skips += e == "skip";
  CHECK(skips == 8);
  // Nothing moved (no decay either): bit for bit, the NaN weights included.
  REQUIRE(run.weights.size() == initial.size());
  CHECK(std::memcmp(run.weights.data(), initial.data(), initial.size() * sizeof(float)) == 0);

  // on_nan: stop stops at the read that finds it, naming the step whose update was skipped.
  auto stopping = config_for(fresh_dir("poisoned_stop"), 8, 4);
  stopping.training.on_nan = lmf::train::NanPolicy::stop;
  lmf::train::Trainer trainer(stopping, make());
  CHECK_THROWS_WITH(trainer.fit(), Catch::Contains("step 1: training loss is nan"));
}

TEST_CASE("the host waits of a GPU run grow with its log lines, not with its steps", "[cuda][trainer]") {
  LMF_SKIP_WITHOUT_GPU();
  // The same 4 log lines (and end-of-run work) over 8 and over 40 steps: a per-step read-back or
  // wait would add at least 32 between the two.
  const Run short_run = train(config_for(fresh_dir("syncs_short"), 8, 2));
  const Run long_run = train(config_for(fresh_dir("syncs_long"), 40, 10));
  INFO("host waits: 8 steps " << short_run.host_syncs << ", 40 steps " << long_run.host_syncs);
  CHECK(long_run.steps.size() == 40);
  CHECK(long_run.host_syncs <= short_run.host_syncs + 4);
}
