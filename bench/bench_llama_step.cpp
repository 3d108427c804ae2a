// One Llama-style training step (forward, backward, AdamW or Muon) timed on the CPU. The default
// shape is SmolLM2-135M's (hidden 576, 30 layers, 9 heads on 3 K/V heads, SwiGLU 1536, vocabulary
// 49152, tied embeddings), the ~125M-parameter class of GPT-2 small; bench/train_torch_cpu.py
// `llama` is the same model in PyTorch. Reports ms/step, tokens/s and, given the GEMM ceiling
// (--ceiling GFLOP/s), MFU with FLOPs per token = 6 N + 12 L C T.
// Usage: bench_llama_step [--layers L --hidden C --heads NH --kv-heads NKV --intermediate I
//                          --vocab V --batch B --seq T --steps S --ceiling GFLOPS --muon 0|1]
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "lmforge/autograd.h"
#include "lmforge/nn/llama.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/optim/muon.h"
#include "step_timing.h"

int main(int argc, char** argv) {
  lmf::nn::LlamaConfig config;
  config.vocab_size = 49152;
  config.hidden_size = 576;
  config.intermediate_size = 1536;
  config.num_hidden_layers = 30;
  config.num_attention_heads = 9;
  config.num_key_value_heads = 3;
  config.max_position_embeddings = 2048;
  config.rope_theta = 100000.0;
  config.tie_word_embeddings = true;
  int64_t B = 4, T = 512, steps = 3;
  double ceiling = 0.0;
  bool use_muon = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char* key = argv[i];
    const double value = std::atof(argv[i + 1]);
    if (!std::strcmp(key, "--layers")) config.num_hidden_layers = int64_t(value);
    else if (!std::strcmp(key, "--hidden")) config.hidden_size = int64_t(value);
    else if (!std::strcmp(key, "--heads")) config.num_attention_heads = int64_t(value);
    else if (!std::strcmp(key, "--kv-heads")) config.num_key_value_heads = int64_t(value);
    else if (!std::strcmp(key, "--intermediate")) config.intermediate_size = int64_t(value);
    else if (!std::strcmp(key, "--vocab")) config.vocab_size = int64_t(value);
    else if (!std::strcmp(key, "--batch")) B = int64_t(value);
    else if (!std::strcmp(key, "--seq")) T = int64_t(value);
    else if (!std::strcmp(key, "--steps")) steps = int64_t(value);
    else if (!std::strcmp(key, "--ceiling")) ceiling = value;
    else if (!std::strcmp(key, "--muon")) use_muon = value != 0;
    else { std::fprintf(stderr, "unknown option %s\n", key); return 2; }
  }
  config.max_position_embeddings = std::max<int64_t>(config.max_position_embeddings, T);
  lmf::nn::Llama model(config, 1337);
  std::unique_ptr<lmf::optim::Muon> muon;
  std::vector<std::string> muon_names;
  if (use_muon) {
    muon_names = lmf::optim::muon_parameter_names(model);
    muon = std::make_unique<lmf::optim::Muon>(model, lmf::optim::MuonConfig{}, muon_names);
  }
  lmf::optim::AdamW opt(model, {6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f}, muon_names);
  const lmf::bench::StepBatch batch = lmf::bench::random_step_batch(config.vocab_size, B, T);
  float loss = 0.f;
  const lmf::bench::StepTimes times = lmf::bench::time_steps(steps, [&] {
    model.zero_grad();
    const lmf::Tensor l = model.forward_with_loss(batch.ids, batch.targets).loss;
    lmf::backward(l);
    opt.step();
    if (muon) muon->step();
    loss = l.item();
  });
  const double n_params = double(model.num_parameters());
  const double flops_per_token = 6.0 * n_params + 12.0 * config.num_hidden_layers * config.hidden_size * double(T);
  std::printf("model: L=%lld C=%lld NH=%lld NKV=%lld I=%lld V=%lld, %.1fM parameters; B=%lld T=%lld; threads %d; "
              "optimizer %s\n",
              (long long)config.num_hidden_layers, (long long)config.hidden_size,
              (long long)config.num_attention_heads, (long long)config.kv_heads(), (long long)config.intermediate_size,
              (long long)config.vocab_size, n_params / 1e6, (long long)B, (long long)T, omp_get_max_threads(),
              use_muon ? "muon+adamw" : "adamw");
  lmf::bench::print_step_line(times, steps, B * T, flops_per_token, ceiling, loss);
  return 0;
}
