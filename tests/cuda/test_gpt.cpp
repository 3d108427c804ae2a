// The whole GPT-2 model on the GPU against the CPU: logits, loss and every parameter gradient of one
// forward/backward, then a short AdamW training run whose loss curve must follow the CPU's.
// The GPU multiplies matrices in bf16 (fp32 accumulate); the error budget is how far the CPU model
// moves when its weights are rounded to bf16, times a small factor for the activations, which the
// GPU rounds as well.
#include <cmath>

#include "cuda/cuda_test_util.h"
#include "lmforge/autograd.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/kv_cache.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"

using lmf::Tensor;
using lmf::nn::GPT;
using lmf::nn::GPTConfig;

namespace {

GPTConfig small_config() {
  GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 128;  // HS 64: the fast attention path
  c.block_size = 64;
  c.vocab_size = 101;
  return c;
}

// A learnable batch: each row counts upwards modulo V from its own start.
std::pair<Tensor, Tensor> batch(int64_t B, int64_t T, int64_t V) {
  std::vector<int32_t> ids(B * T), targets(B * T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      ids[b * T + t] = static_cast<int32_t>((b * 13 + t) % V);
      targets[b * T + t] = static_cast<int32_t>((b * 13 + t + 1) % V);
    }
  return {Tensor::from_vector(ids, {B, T}), Tensor::from_vector(targets, {B, T})};
}

double l2_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return std::sqrt(s);
}

struct Pass {
  float loss;
  std::vector<float> logits, grads;
};

Pass forward_backward(GPT& model, const Tensor& ids, const Tensor& targets) {
  model.zero_grad();
  const lmf::Device device = model.slab()->device();
  GPT::Output out = model.forward(ids.to(device), targets.to(device));
  out.loss.backward();
  return {out.loss.item(), out.logits.to_vector(), model.slab()->grads().to_vector()};
}

}  // namespace

TEST_CASE("GPT forward and backward on the GPU agree with the CPU", "[cuda][gpt]") {
  LMF_SKIP_WITHOUT_GPU();
  const GPTConfig config = small_config();
  GPT cpu_model(config, 1234), cpu_rounded(config, 1234), gpu_model(config, 1234);
  {
    lmf::NoGradGuard no_grad;
    for (auto& [name, t] : cpu_rounded.named_parameters()) {
      Tensor p = t;
      p.copy_(t.to(lmf::DType::bf16));
    }
  }
  gpu_model.to(lmf::Device::cuda());
  const auto [ids, targets] = batch(4, 64, config.vocab_size);
  const Pass ref = forward_backward(cpu_model, ids, targets);
  const Pass ref16 = forward_backward(cpu_rounded, ids, targets);
  const Pass gpu = forward_backward(gpu_model, ids, targets);
  constexpr double kActivationFactor = 4;
  CHECK(std::fabs(gpu.loss - ref.loss) <= kActivationFactor * std::max(1e-6, double(std::fabs(ref16.loss - ref.loss))));
  CHECK(l2_diff(gpu.logits, ref.logits) <= kActivationFactor * l2_diff(ref16.logits, ref.logits) + 1e-6);
  CHECK(l2_diff(gpu.grads, ref.grads) <= kActivationFactor * l2_diff(ref16.grads, ref.grads) + 1e-6);
}

TEST_CASE("a short GPU training run follows the CPU loss curve", "[cuda][gpt]") {
  LMF_SKIP_WITHOUT_GPU();
  const GPTConfig config = small_config();
  GPT cpu_model(config, 99), gpu_model(config, 99);
  gpu_model.to(lmf::Device::cuda());
  lmf::optim::AdamWConfig opt;
  opt.lr = 3e-3f;
  lmf::optim::AdamW cpu_opt(cpu_model, opt), gpu_opt(gpu_model, opt);
  const auto [ids, targets] = batch(4, 32, config.vocab_size);
  std::vector<float> cpu_losses, gpu_losses;
  for (int step = 0; step < 30; ++step) {
    cpu_losses.push_back(forward_backward(cpu_model, ids, targets).loss);
    gpu_losses.push_back(forward_backward(gpu_model, ids, targets).loss);
    cpu_opt.step();
    gpu_opt.step();
  }
  for (std::size_t i = 0; i < cpu_losses.size(); ++i) {
    CAPTURE(i, cpu_losses[i], gpu_losses[i]);
    // bf16 matmuls perturb each step slightly; the curves must stay together, not bit-equal.
    CHECK(std::fabs(gpu_losses[i] - cpu_losses[i]) <= 0.05 * cpu_losses[0]);
  }
  CHECK(gpu_losses.back() < 0.5f * gpu_losses.front());
}

TEST_CASE("GPU ops report bad token ids as errors", "[cuda][gpt]") {
  LMF_SKIP_WITHOUT_GPU();
  GPT model(small_config(), 5);
  model.to(lmf::Device::cuda());
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 500, 3}, {1, 4}).to(lmf::Device::cuda());
  CHECK_THROWS_WITH(model.forward(ids), Catch::Contains("500") && Catch::Contains("position 2"));
}

TEST_CASE("GPT forward with a KV cache on the GPU gives the CPU's logits as closely as the uncached GPU forward",
          "[cuda][gpt][generate]") {
  LMF_SKIP_WITHOUT_GPU();
  const GPTConfig config = small_config();
  GPT cpu_model(config, 99), gpu_model(config, 99);
  cpu_model.eval();
  gpu_model.to(lmf::Device::cuda());
  gpu_model.eval();
  lmf::NoGradGuard no_grad;
  // Cached logits, prefill of 5 then one token at a time, against the uncached forward on each device.
  const auto [ids, targets] = batch(1, 12, config.vocab_size);
  const std::vector<float> cpu_full = cpu_model.forward(ids).to_vector();  // (1, 12, V)
  auto cache = gpu_model.make_cache(1);
  std::vector<float> cached;  // rows 4..11
  auto append = [&](const Tensor& logits) {  // (1, T, V) -> last row
    const auto v = logits.to_vector();
    cached.insert(cached.end(), v.end() - config.vocab_size, v.end());
  };
  append(gpu_model.forward(lmf::slice(ids, 1, 0, 5).contiguous_copy().to(lmf::Device::cuda()), &cache));
  for (int64_t t = 5; t < 12; ++t)
    append(gpu_model.forward(lmf::slice(ids, 1, t, t + 1).contiguous_copy().to(lmf::Device::cuda()), &cache));
  const std::vector<float> ref(cpu_full.begin() + 4 * config.vocab_size, cpu_full.end());
  const std::vector<float> gpu_full = gpu_model.forward(ids.to(lmf::Device::cuda())).to_vector();
  const std::vector<float> gpu_ref(gpu_full.begin() + 4 * config.vocab_size, gpu_full.end());
  // The GPU multiplies in bf16, cached or not: the cached rows sit as close to the CPU as the
  // uncached GPU rows do (twice that distance, plus rounding).
  CHECK(l2_diff(cached, ref) <= 2 * l2_diff(gpu_ref, ref) + 1e-5);
}
