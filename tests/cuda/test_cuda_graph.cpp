// CudaGraph on a GPU: a tiny GPT trained by a custom loop gives the same losses and weights, bit
// for bit, whether its steps run eagerly or as one captured step replayed (the same kernels in
// the same order on the same values; AdamW reads the per-step lr and bias corrections from
// device memory, so a changing lr and the step count reach the replays). A host read inside a
// capture fails naming itself, and leaves the device usable.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "adamw_step_scalars.h"
#include "cuda/cuda_test_util.h"
#include "lmforge/autograd.h"
#include "core/private_pool.h"
#include "lmforge/core/cuda_graph.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"

using lmf::Tensor;
using lmf::nn::GPT;
using lmf::nn::GPTConfig;

namespace {

constexpr int64_t kB = 4, kT = 32, kSteps = 6;

GPTConfig tiny_config() {
  GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 128;  // HS 64: the fast attention path
  c.block_size = kT;
  c.vocab_size = 97;
  return c;
}

// Batch `step` as CPU tensors: rows counting upwards modulo V from a start that moves each step.
std::pair<Tensor, Tensor> cpu_batch(int64_t step, int64_t V) {
  std::vector<int32_t> ids(kB * kT), targets(kB * kT);
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t t = 0; t < kT; ++t) {
      const int64_t start = (7 * step + 13 * b) % V;
      ids[b * kT + t] = static_cast<int32_t>((start + t) % V);
      targets[b * kT + t] = static_cast<int32_t>((start + t + 1) % V);
    }
  return {Tensor::from_vector(ids, {kB, kT}), Tensor::from_vector(targets, {kB, kT})};
}

float lr_at(int64_t step) { return 3e-3f / static_cast<float>(1 + step); }  // changes every step

struct Run {
  std::vector<float> losses;
  std::vector<float> weights;
  int64_t optimizer_steps = 0;
};

std::vector<float> weights_of(const GPT& model) { return model.slab()->params.to_vector(); }

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// kSteps steps; with `graph`, the first is eager (warm-up: handles, kernel attributes, the cache),
// the second is captured (which runs it once) and the rest are replays.
Run train(bool graph) {
  const lmf::Device gpu = lmf::Device::cuda();
  GPT model(tiny_config(), /*seed=*/5);
  model.to(gpu);
  lmf::optim::AdamW opt(model, {.lr = lr_at(0), .weight_decay = 0.1f});
  // Static inputs: each batch is copied into these same device tensors.
  Tensor ids = Tensor::zeros({kB, kT}, lmf::DType::i32, gpu);
  Tensor targets = Tensor::zeros({kB, kT}, lmf::DType::i32, gpu);
  Tensor loss;
  auto step = [&] {
    model.zero_grad();
    loss = model.forward_loss(ids, targets);
    loss.backward();
    opt.step();
  };
  lmf::CudaGraph cuda_graph;
  Run run;
  for (int64_t s = 0; s < kSteps; ++s) {
    auto [cpu_ids, cpu_targets] = cpu_batch(s, tiny_config().vocab_size);
    ids.copy_(cpu_ids);
    targets.copy_(cpu_targets);
    opt.set_lr(lr_at(s));
    if (!graph || s == 0) {
      step();
    } else if (s == 1) {
      cuda_graph.capture(gpu, step);
      REQUIRE(cuda_graph.captured());
    } else {
      cuda_graph.replay();
    }
    run.losses.push_back(loss.item());  // after the step, outside the graph
  }
  run.weights = weights_of(model);
  run.optimizer_steps = opt.step_count();
  return run;
}

}  // namespace

TEST_CASE("AdamW with its scalars in device memory matches the CPU arithmetic and reads them at launch") {
  LMF_SKIP_WITHOUT_GPU();
  namespace k = lmf::kernels;
  const int64_t n = 10007;
  auto p = lmf::test::random_vector(n, 18), g = lmf::test::random_vector(n, 19);
  auto m = lmf::test::random_vector(n, 20, 0.1f), v = lmf::test::random_vector(n, 21, 0.1f);
  for (float& x : v) x = x * x;
  lmf::test::DeviceBuffer<float> dp(p), dg(g), dm(m), dv(v), dscalars(std::vector<float>(3, 0.f));
  const float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  // Two steps with different lr and step counts through the same buffer, rewritten in between.
  for (int step = 3; step <= 4; ++step) {
    const float lr = 1e-3f * static_cast<float>(step);
    const float bc1 = 1.f - std::pow(b1, float(step)), bc2 = std::sqrt(1.f - std::pow(b2, float(step)));
    dscalars.upload({lr, lr / bc1, bc2});
    k::adamw_update_device_scalars(dp.get(), dg.get(), dm.get(), dv.get(), n, wd, b1, b2, eps,
                                   reinterpret_cast<const k::AdamWStepScalars*>(dscalars.get()), nullptr);
    const float decay = 1.f - lr * wd;
    for (int64_t i = 0; i < n; ++i) {
      m[i] = b1 * m[i] + (1.f - b1) * g[i];
      v[i] = b2 * v[i] + (1.f - b2) * g[i] * g[i];
      p[i] = p[i] * decay - (lr / bc1) * m[i] / (std::sqrt(v[i]) / bc2 + eps);
    }
  }
  // Same expression order as the CPU; only fused multiply-adds may differ: a few ulps per value
  // (the tolerances of the by-value update's test in test_kernels.cpp, for two steps).
  CHECK(lmf::test::max_abs_diff(dm.download(), m) <= 2e-6);
  CHECK(lmf::test::max_abs_diff(dv.download(), v) <= 2e-6);
  CHECK(lmf::test::max_abs_diff(dp.download(), p) <= 2e-5);
}

TEST_CASE("a captured step replayed gives the eager run's losses and weights bit for bit") {
  LMF_SKIP_WITHOUT_GPU();
  const Run eager = train(false);
  const Run again = train(false);
  // Control: two eager runs agree bit for bit, so any difference below comes from the graph.
  REQUIRE(bitwise_equal(eager.losses, again.losses));
  REQUIRE(bitwise_equal(eager.weights, again.weights));
  const Run replayed = train(true);
  REQUIRE(replayed.optimizer_steps == kSteps);
  for (int64_t s = 0; s < kSteps; ++s) {
    INFO("step " << s << ": eager " << eager.losses[s] << ", graph " << replayed.losses[s]);
    CHECK(std::memcmp(&eager.losses[s], &replayed.losses[s], sizeof(float)) == 0);
  }
  REQUIRE(bitwise_equal(eager.weights, replayed.weights));
  // The losses fell: the replays trained, not just repeated one step's values.
  REQUIRE(replayed.losses.back() < replayed.losses.front());
}

TEST_CASE("a host read inside a capture fails naming it and leaves the GPU usable") {
  LMF_SKIP_WITHOUT_GPU();
  const lmf::Device gpu = lmf::Device::cuda();
  GPT model(tiny_config(), 5);
  model.to(gpu);
  auto [cpu_ids, cpu_targets] = cpu_batch(0, tiny_config().vocab_size);
  const Tensor ids = cpu_ids.to(gpu), targets = cpu_targets.to(gpu);
  const float eager_loss = model.forward_loss(ids, targets).item();

  lmf::CudaGraph graph;
  REQUIRE_THROWS_WITH(graph.capture(gpu, [&] { (void)model.forward_loss(ids, targets).item(); }),
                      Catch::Contains("host read") && Catch::Contains("CUDA graph capture"));
  CHECK_FALSE(graph.captured());
  CHECK(lmf::CudaGraph::capturing(gpu) == nullptr);
  CHECK(lmf::detail::active_private_pool(gpu) == 0);
  REQUIRE_THROWS_WITH(graph.replay(), Catch::Contains("nothing captured"));
  // Copying a host tensor up inside a capture is refused the same way.
  REQUIRE_THROWS_WITH(graph.capture(gpu, [&] { (void)cpu_ids.to(gpu); }), Catch::Contains("host-to-device copy"));
  // Eager work after the failed captures runs and gives the same loss.
  REQUIRE(model.forward_loss(ids, targets).item() == eager_loss);
}

TEST_CASE("memory allocated and freed inside a capture stays with the graph") {
  LMF_SKIP_WITHOUT_GPU();
  const lmf::Device gpu = lmf::Device::cuda();
  Tensor x = Tensor::ones({1 << 16}, lmf::DType::f32, gpu);
  Tensor y;
  const void* scratch = nullptr;
  lmf::CudaGraph graph;
  graph.capture(gpu, [&] {
    Tensor tmp = Tensor::empty({1 << 20}, lmf::DType::f32, gpu);  // freed inside the capture
    scratch = tmp.raw_data();
    tmp.fill_(2.f);
    y = lmf::add(x, x);
  });
  REQUIRE(lmf::detail::private_pool_bytes(gpu) >= (std::size_t(1) << 22));
  // An eager allocation of the same size gets other memory: the graph's scratch is reserved.
  const Tensor other = Tensor::empty({1 << 20}, lmf::DType::f32, gpu);
  REQUIRE(other.raw_data() != scratch);
  x.fill_(3.f);  // static input changed before the replay
  graph.replay();
  const std::vector<float> out = y.to_vector();
  REQUIRE(out.front() == 6.f);
  REQUIRE(out.back() == 6.f);
}
