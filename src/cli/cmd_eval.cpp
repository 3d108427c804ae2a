// `lmforge eval`: the mean cross-entropy (and perplexity) of a checkpoint of any architecture
// io::load_model knows (ours or a Hugging Face directory), on a token shard. Windows are consecutive and non-overlapping so every token is
// predicted exactly once and the number matches what any other implementation computes.
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "lmforge/autograd.h"
#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/io/checkpoint.h"

namespace lmf::cli {

namespace {

struct EvalOptions {
  std::string checkpoint;
  std::string data;
  int64_t block_size = 0;  // 0: the model's context
  int64_t batch_size = 8;
  int64_t max_batches = 0;  // 0: all
  std::string device = "cpu";
  bool json = false;
};

struct EvalResult {
  double loss = 0;
  int64_t tokens = 0;
  int64_t batches = 0;
};

EvalResult evaluate(const nn::CausalLM& gpt, const data::Shard& shard, const EvalOptions& options,
                    int64_t block_size, Device device) {
  const int64_t T = block_size;
  const int64_t vocab = gpt.vocab_size();
  // Window i reads inputs [i·T, i·T + T) and targets one further, so it needs i·T + T + 1 tokens.
  const int64_t windows = (shard.size() - 1) / T;
  LMF_CHECK(windows > 0, shard.path(), ": ", shard.size(), " tokens are too few for one window of ",
            T, " tokens plus its next-token target (need ", T + 1, ")");

  EvalResult result;
  double loss_sum = 0;  // sum over predicted tokens, in double so long shards do not drift
  std::vector<int32_t> window(static_cast<std::size_t>(T + 1));
  NoGradGuard no_grad;
  for (int64_t first = 0; first < windows; first += options.batch_size) {
    if (options.max_batches > 0 && result.batches >= options.max_batches) break;
    const int64_t B = std::min(options.batch_size, windows - first);
    std::vector<int32_t> inputs(static_cast<std::size_t>(B * T));
    std::vector<int32_t> targets(static_cast<std::size_t>(B * T));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t offset = (first + b) * T;
      shard.read(offset, T + 1, window.data());
      for (int64_t t = 0; t <= T; ++t)
        LMF_CHECK(window[t] >= 0 && window[t] < vocab, shard.path(), ": token ", window[t],
                  " at offset ", offset + t, " is outside the model's vocabulary (vocab_size ",
                  vocab, ")");
      std::copy(window.begin(), window.begin() + T, inputs.begin() + b * T);
      std::copy(window.begin() + 1, window.end(), targets.begin() + b * T);
    }
    Tensor ids = Tensor::from_vector(inputs, {B, T}).to(device);      // (B, T)
    Tensor next = Tensor::from_vector(targets, {B, T}).to(device);    // (B, T)
    const double mean = gpt.forward_with_loss(ids, next).loss.item();
    loss_sum += mean * static_cast<double>(B * T);
    result.tokens += B * T;
    ++result.batches;
  }
  result.loss = loss_sum / static_cast<double>(result.tokens);
  return result;
}

void run_eval(const EvalOptions& options) {
  LMF_CHECK(options.batch_size > 0, "--batch-size must be positive, got ", options.batch_size);
  LMF_CHECK(options.max_batches >= 0, "--max-batches must be non-negative, got ",
            options.max_batches);
  const Device device = parse_device(options.device);
  std::unique_ptr<nn::CausalLM> gpt = io::load_model(options.checkpoint);
  const int64_t context = gpt->context_size();
  const int64_t block_size = options.block_size == 0 ? context : options.block_size;
  LMF_CHECK(block_size > 0, "--block-size must be positive, got ", block_size);
  LMF_CHECK(block_size <= context, "--block-size ", block_size, " exceeds the model's context of ",
            context, " tokens (n_positions in ", options.checkpoint, "/config.json)");
  data::Shard shard(options.data);
  if (!device.is_cpu()) gpt->to(device);
  gpt->eval();

  const EvalResult r = evaluate(*gpt, shard, options, block_size, device);
  const double perplexity = std::exp(r.loss);
  if (options.json) {
    nlohmann::json out = {{"loss", r.loss}, {"perplexity", perplexity}, {"tokens", r.tokens}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("loss: %.6f\nperplexity: %.6f\ntokens: %lld\n", r.loss, perplexity,
                static_cast<long long>(r.tokens));
  }
  LMF_CHECK(std::fflush(stdout) == 0, "cannot write standard output");
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto options = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Mean cross-entropy and perplexity of a checkpoint on a token shard");
  cmd->add_option("--checkpoint", options->checkpoint,
                  "Checkpoint directory (ours or a Hugging Face GPT-2 directory)")
      ->required();
  cmd->add_option("--data", options->data, "Token shard (.bin)")->required();
  add_integer<int64_t>(cmd, "--block-size", options->block_size, 0, INT32_MAX,
                  "Tokens per window (default and maximum: the model's context)");
  add_integer<int64_t>(cmd, "--batch-size", options->batch_size, 1, 1 << 16, "Windows per forward pass")
      ->capture_default_str();
  add_integer<int64_t>(cmd, "--max-batches", options->max_batches, 0, int64_t{1} << 53, "Evaluate at most this many batches (0: all)")
      ->capture_default_str();
  cmd->add_option("--device", options->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_flag("--json", options->json, "Print one JSON object instead of lines");
  cmd->callback([options] { run_eval(*options); });
}

}  // namespace lmf::cli
