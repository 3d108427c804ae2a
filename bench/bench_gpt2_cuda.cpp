// GPT-2 124M training steps (forward, backward, AdamW) on one GPU through the public API, random
// tokens, B = 8, T = 1024 by default: tokens/s and model FLOPs utilisation against the GPU's bf16
// peak from the device table (the CUDA products run in bf16). FLOPs per token = 6 N + 12 L C T
// (N without wpe), as llm.c and the trainer count. The GPU check bundle runs it.
// Usage: bench_gpt2_cuda [--layers L --embd C --heads NH --vocab V --batch B --seq T --steps S]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "lmforge/autograd.h"
#include "lmforge/core/device_peak.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/optim/adamw.h"

int main(int argc, char** argv) {
  lmf::nn::GPTConfig config;  // GPT-2 124M
  config.vocab_size = 50304;  // padded to a multiple of 128, as llm.c and the PyTorch script
  int64_t B = 8, T = 1024, steps = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char* key = argv[i];
    const int64_t value = std::atoll(argv[i + 1]);
    if (!std::strcmp(key, "--layers")) config.n_layer = value;
    else if (!std::strcmp(key, "--embd")) config.n_embd = value;
    else if (!std::strcmp(key, "--heads")) config.n_head = value;
    else if (!std::strcmp(key, "--vocab")) config.vocab_size = value;
    else if (!std::strcmp(key, "--batch")) B = value;
    else if (!std::strcmp(key, "--seq")) T = value;
    else if (!std::strcmp(key, "--steps")) steps = value;
    else { std::fprintf(stderr, "unknown option %s\n", key); return 2; }
  }
  if (!lmf::cuda_available()) {
    std::printf("bench_gpt2_cuda: skipped: no CUDA GPU\n");
    const char* required = std::getenv("LMF_REQUIRE_GPU");
    return required && std::string(required) == "1" ? 3 : 0;
  }
  config.block_size = std::max(config.block_size, T);
  const lmf::Device gpu = lmf::Device::cuda(0);
  lmf::nn::GPT model(config, 1337);
  model.to(gpu);
  lmf::optim::AdamW opt(model, {6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f});
  std::mt19937 gen(42);
  std::uniform_int_distribution<int32_t> token(0, int32_t(config.vocab_size - 1));
  std::vector<int32_t> data(B * T + 1);
  for (int32_t& t : data) t = token(gen);
  const lmf::Tensor ids =
      lmf::Tensor::from_vector(std::vector<int32_t>(data.begin(), data.end() - 1), {B, T}).to(gpu);
  const lmf::Tensor targets =
      lmf::Tensor::from_vector(std::vector<int32_t>(data.begin() + 1, data.end()), {B, T}).to(gpu);

  const char* matmul = std::getenv("LMF_MATMUL");
  std::printf("matrix products: %s\n", matmul && *matmul ? matmul : "custom (LMF_MATMUL unset)");
  std::vector<double> times;
  float first_loss = 0.f, loss = 0.f;
  for (int64_t s = 0; s <= steps; ++s) {  // step 0 warms caches, handles and plans; not timed
    const auto t0 = std::chrono::steady_clock::now();
    model.zero_grad();
    const lmf::Tensor step_loss = model.forward_loss(ids, targets);  // the trainer's call: chunked head
    lmf::backward(step_loss);
    opt.step();
    loss = step_loss.item();  // reads back: the step is finished on the GPU
    if (s == 0) first_loss = loss;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) times.push_back(dt);
    std::printf("step %lld: loss %.4f, %.1f ms\n", (long long)s, loss, dt * 1e3);
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double flops_per_token = 6.0 * double(model.num_parameters(false)) +
                                 12.0 * double(config.n_layer * config.n_embd) * double(T);
  const double peak = lmf::device_peak_flops(gpu, lmf::MatmulRate::bf16);
  const double achieved = flops_per_token * double(B * T) / median;
  std::printf("lmforge GPT-2 L=%lld C=%lld NH=%lld V=%lld B=%lld T=%lld: median %.1f ms/step, %.0f tokens/s, "
              "%.1f TFLOP/s",
              (long long)config.n_layer, (long long)config.n_embd, (long long)config.n_head,
              (long long)config.vocab_size, (long long)B, (long long)T, median * 1e3, double(B * T) / median,
              achieved / 1e12);
  if (peak > 0) std::printf(", MFU %.1f%% of %.0f TFLOP/s bf16", 100.0 * achieved / peak, peak / 1e12);
  std::printf("; loss %.4f -> %.4f\n", first_loss, loss);
  return loss < first_loss ? 0 : 1;  // ten steps on one batch must lower its loss
}
