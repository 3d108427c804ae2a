// One GPT training step (forward, backward, AdamW) timed on the CPU, the shape llm.c's CPU trainer
// is usually quoted at: GPT-2 124M, B = 4, T = 64. Reports ms/step, tokens/s and, given the
// machine's GEMM ceiling from bench_gemm (--ceiling GFLOP/s), the model FLOPs utilisation, with
// FLOPs per token = 6 N + 12 L C T (N: parameters without wpe; PaLM's accounting, as llm.c uses).
// Usage: bench_gpt2_step [--layers L --embd C --heads NH --vocab V --batch B --seq T --steps S
//                         --ceiling GFLOPS --bf16 0|1]
// --bf16 1 runs every matrix product in bf16 (AVX-512 BF16) with f32 accumulation.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "lmforge/autograd.h"
#include "lmforge/ops.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/optim/adamw.h"
#include "step_timing.h"

int main(int argc, char** argv) {
  lmf::nn::GPTConfig config;  // GPT-2 124M defaults
  int64_t B = 4, T = 64, steps = 5;
  double ceiling = 0.0;
  lmf::ComputeOptions compute;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char* key = argv[i];
    const double value = std::atof(argv[i + 1]);
    if (!std::strcmp(key, "--layers")) config.n_layer = int64_t(value);
    else if (!std::strcmp(key, "--embd")) config.n_embd = int64_t(value);
    else if (!std::strcmp(key, "--heads")) config.n_head = int64_t(value);
    else if (!std::strcmp(key, "--vocab")) config.vocab_size = int64_t(value);
    else if (!std::strcmp(key, "--batch")) B = int64_t(value);
    else if (!std::strcmp(key, "--seq")) T = int64_t(value);
    else if (!std::strcmp(key, "--steps")) steps = int64_t(value);
    else if (!std::strcmp(key, "--ceiling")) ceiling = value;
    else if (!std::strcmp(key, "--bf16")) compute.cpu_matmul_bf16 = value != 0;
    else { std::fprintf(stderr, "unknown option %s\n", key); return 2; }
  }
  const lmf::ComputeScope scope(compute);
  lmf::nn::GPT model(config, 1337);
  lmf::optim::AdamW opt(model, {6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f});
  const lmf::bench::StepBatch batch = lmf::bench::random_step_batch(config.vocab_size, B, T);
  float loss = 0.f;
  const lmf::bench::StepTimes times = lmf::bench::time_steps(steps, [&] {
    model.zero_grad();
    const auto out = model.forward(batch.ids, batch.targets);
    lmf::backward(out.loss);
    opt.step();
    loss = out.loss.item();
  });
  const double n_params = double(model.num_parameters(false));
  const double flops_per_token =
      6.0 * n_params + 12.0 * config.n_layer * config.n_embd * double(T);
  std::printf("model: L=%lld C=%lld NH=%lld V=%lld, %.1fM parameters; B=%lld T=%lld; threads %d; "
              "products in %s\n",
              (long long)config.n_layer, (long long)config.n_embd, (long long)config.n_head,
              (long long)config.vocab_size, model.num_parameters() / 1e6, (long long)B,
              (long long)T, omp_get_max_threads(), compute.cpu_matmul_bf16 && lmf::cpu_matmul_bf16_available() ? "bf16" : "f32");
  lmf::bench::print_step_line(times, steps, B * T, flops_per_token, ceiling, loss);
  return 0;
}
