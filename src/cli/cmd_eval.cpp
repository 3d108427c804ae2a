// `lmforge eval`: the mean cross-entropy (and perplexity) of a checkpoint of any architecture
// io::load_model knows (ours or a Hugging Face directory), on a token shard. Windows are consecutive and non-overlapping so every token is
// predicted exactly once and the number matches what any other implementation computes.
// --task (multiple choice, acc/acc_norm) and --text (bits-per-byte) call the library's scorers in
// lmforge/train/task_eval.h, so the trainer's eval.tasks reports the same numbers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "lmforge/autograd.h"
#include "data/progress.h"
#include "io/safe_file.h"
#include "lmforge/core/error.h"
#include "lmforge/data/loader.h"
#include "lmforge/data/shard.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/train/task_eval.h"

namespace lmf::cli {

namespace {

struct EvalOptions {
  std::string checkpoint;
  std::string data;
  std::vector<std::string> tasks;  // multiple-choice JSONL files
  std::string text;                // bits-per-byte text file
  std::string tokenizer;           // for tasks and text; default: the checkpoint's
  int64_t block_size = 0;  // 0: the model's context
  int64_t batch_size = 8;
  int64_t max_batches = 0;  // 0: all
  std::string loss = "all";  // --data on a chat shard: all | assistant
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

// A chat shard (X.bin with its X.bin.mask): the windows the trainer's validation uses, each starting
// at a conversation and never crossing into the next, in order; with `assistant` only the assistant
// replies' targets count. The loss is the mean over every counted target, as the trainer's is.
EvalResult evaluate_masked(const nn::CausalLM& gpt, const EvalOptions& options, int64_t block_size,
                           Device device) {
  const int64_t T = block_size;
  data::LoaderOptions lo;
  lo.batch_size = 1;
  lo.block_size = T;
  lo.order = data::LoaderOrder::sequential;
  lo.vocab_size = gpt.vocab_size();
  lo.mask_targets = options.loss == "assistant";
  data::DataLoader loader(std::vector<std::string>{options.data}, lo);
  const int64_t windows = loader.steps_per_epoch();
  LMF_CHECK(windows > 0, options.data, ": no conversation window fits ", T, " tokens");

  EvalResult result;
  double loss_sum = 0;  // sum over counted targets
  NoGradGuard no_grad;
  for (int64_t first = 0; first < windows; first += options.batch_size) {
    if (options.max_batches > 0 && result.batches >= options.max_batches) break;
    const int64_t B = std::min(options.batch_size, windows - first);
    std::vector<int32_t> inputs(static_cast<std::size_t>(B * T)), targets(static_cast<std::size_t>(B * T));
    for (int64_t b = 0; b < B; ++b) loader.next(inputs.data() + b * T, targets.data() + b * T);
    const int64_t counted = std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t >= 0; });
    ++result.batches;
    if (counted == 0) continue;  // a batch of prompts only: nothing to score
    Tensor ids = Tensor::from_vector(inputs, {B, T}).to(device);    // (B, T)
    Tensor next = Tensor::from_vector(targets, {B, T}).to(device);  // (B, T)
    loss_sum += gpt.forward_with_loss(ids, next, -1).loss.item() * static_cast<double>(counted);
    result.tokens += counted;
  }
  LMF_CHECK(result.tokens > 0, options.data, ": no target is trained (every assistant reply masked out?)");
  result.loss = loss_sum / static_cast<double>(result.tokens);
  return result;
}

namespace fs = std::filesystem;

// The checkpoint's tokenizer: its tokenizer.json (ours or Hugging Face's), else GPT-2's
// vocab.json + merges.txt beside the weights.
std::unique_ptr<data::Tokenizer> open_tokenizer(const EvalOptions& options) {
  try {
    if (!options.tokenizer.empty()) return data::load_tokenizer(options.tokenizer);
    const fs::path dir(options.checkpoint);
    if (fs::exists(dir / "tokenizer.json")) return data::load_tokenizer((dir / "tokenizer.json").string());
    if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) return data::load_tokenizer(dir.string());
  } catch (const Error& e) {
    throw Error(str("--tokenizer: ", e.what()));
  }
  throw Error(str("checkpoint '", io::clip(options.checkpoint), "' has no tokenizer.json (nor vocab.json + ",
                  "merges.txt); --task and --text need one: pass --tokenizer FILE.json or a directory"));
}

void print_data(const EvalResult& r, bool json) {
  const double perplexity = std::exp(r.loss);
  if (json) {
    nlohmann::json out = {{"loss", r.loss}, {"perplexity", perplexity}, {"tokens", r.tokens}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("loss: %.6f\nperplexity: %.6f\ntokens: %lld\n", r.loss, perplexity,
                static_cast<long long>(r.tokens));
  }
}

// Every task file and the text, read and encoded before anything is scored, so a bad line in the
// last file fails in a second rather than after the first file's evaluation.
struct EvalInputs {
  std::vector<std::vector<train::EncodedChoice>> tasks;
  train::BitsPerByteText text;
};

EvalInputs read_inputs(const data::Tokenizer& tokenizer, const EvalOptions& options, int64_t block_size) {
  EvalInputs inputs;
  for (const std::string& file : options.tasks) {
    std::vector<train::EncodedChoice> encoded;
    for (const train::ChoiceExample& e : train::read_choice_task(file)) {
      encoded.push_back(train::encode_choice(tokenizer, e));
      train::check_choice_window(encoded.back(), block_size);
    }
    inputs.tasks.push_back(std::move(encoded));
  }
  if (!options.text.empty()) {
    const std::string text =
        io::read_regular_file(options.text, std::uint64_t{1} << 30, str("--text ", io::clip(options.text)));
    inputs.text = train::encode_bits_per_byte(tokenizer, text, io::clip(options.text));
  }
  return inputs;
}

void print_json(const nlohmann::json& out) {
  std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

void run_task(const nn::CausalLM& model, const std::string& file, const std::vector<train::EncodedChoice>& examples,
              bool json, train::TaskEvalOptions options) {
  data::ProgressBar bar(fs::path(file).filename().string(), static_cast<int64_t>(examples.size()), "examples");
  options.progress = [&bar](int64_t done, int64_t) { bar.update(done); };
  const train::ChoiceResult r = train::evaluate_choices(model, examples, options);
  bar.finish();
  if (r.truncated > 0)
    std::fprintf(stderr, "lmforge: %s: %lld contexts were left-truncated to fit the window\n",
                 io::clip(file).c_str(), static_cast<long long>(r.truncated));
  if (json) {
    print_json({{"task", file}, {"acc", r.acc}, {"acc_norm", r.acc_norm}, {"count", r.count}});
  } else {
    std::printf("task: %s\nacc: %.6f\nacc_norm: %.6f\ncount: %lld\n", io::clip(file).c_str(), r.acc,
                r.acc_norm, static_cast<long long>(r.count));
  }
}

void run_text(const nn::CausalLM& model, const std::string& file, const train::BitsPerByteText& text, bool json,
              train::TaskEvalOptions options) {
  const int64_t predicted = static_cast<int64_t>(text.sequence.size()) - 1;
  const int64_t width = std::min(options.block_size, predicted);
  data::ProgressBar bar(fs::path(file).filename().string(), (predicted + width - 1) / width, "windows");
  options.progress = [&bar](int64_t done, int64_t) { bar.update(done); };
  const train::BitsPerByteResult r = train::evaluate_bits_per_byte(model, text, options);
  bar.finish();
  if (json) {
    print_json({{"text", file}, {"bits_per_byte", r.bits_per_byte}, {"loss", r.loss}, {"tokens", r.tokens},
                {"bytes", r.bytes}});
  } else {
    std::printf("text: %s\nbits_per_byte: %.6f\nloss: %.6f\ntokens: %lld\nbytes: %lld\n", io::clip(file).c_str(),
                r.bits_per_byte, r.loss, static_cast<long long>(r.tokens), static_cast<long long>(r.bytes));
  }
}

void run_eval(const EvalOptions& options) {
  LMF_CHECK(options.batch_size > 0, "--batch-size must be positive, got ", options.batch_size);
  LMF_CHECK(options.max_batches >= 0, "--max-batches must be non-negative, got ",
            options.max_batches);
  LMF_CHECK(!options.data.empty() || !options.tasks.empty() || !options.text.empty(),
            "eval needs --data FILE.bin, --task FILE.jsonl or --text FILE");
  const Device device = parse_device(options.device);
  std::unique_ptr<nn::CausalLM> gpt = io::load_model(options.checkpoint);
  const int64_t context = gpt->context_size();
  const int64_t block_size = options.block_size == 0 ? context : options.block_size;
  LMF_CHECK(block_size > 0, "--block-size must be positive, got ", block_size);
  LMF_CHECK(block_size <= context, "--block-size ", block_size, " exceeds the model's context of ",
            context, " tokens (n_positions in ", options.checkpoint, "/config.json)");
  LMF_CHECK(options.loss == "all" || options.loss == "assistant", "--loss: '", io::clip(options.loss),
            "' is neither all nor assistant");
  std::unique_ptr<data::Shard> shard;
  bool masked = false;
  if (!options.data.empty()) {
    shard = std::make_unique<data::Shard>(options.data);
    masked = fs::exists(data::mask_path_for(options.data));
    LMF_CHECK(masked || options.loss == "all", "--loss assistant needs a loss mask beside the shard (",
              data::mask_path_for(options.data), "); prepare the data with `lmforge prepare --format chat`");
  }
  std::unique_ptr<data::Tokenizer> tokenizer;
  if (!options.tasks.empty() || !options.text.empty()) {
    tokenizer = open_tokenizer(options);
    LMF_CHECK(tokenizer->vocab_size() <= gpt->vocab_size(), "the tokenizer has ", tokenizer->vocab_size(),
              " tokens but the model only ", gpt->vocab_size(), " (vocab_size in ", options.checkpoint,
              "/config.json): they do not belong together");
  }
  const EvalInputs inputs = tokenizer ? read_inputs(*tokenizer, options, block_size) : EvalInputs{};
  if (!device.is_cpu()) gpt->to(device);
  gpt->eval();

  if (shard)
    print_data(masked ? evaluate_masked(*gpt, options, block_size, device)
                      : evaluate(*gpt, *shard, options, block_size, device),
               options.json);
  train::TaskEvalOptions task_options;
  task_options.device = device;
  task_options.block_size = block_size;
  task_options.batch_size = options.batch_size;
  for (std::size_t i = 0; i < options.tasks.size(); ++i) {
    LMF_CHECK(std::fflush(stdout) == 0, "cannot write standard output");
    run_task(*gpt, options.tasks[i], inputs.tasks[i], options.json, task_options);
  }
  if (!options.text.empty()) {
    LMF_CHECK(std::fflush(stdout) == 0, "cannot write standard output");
    run_text(*gpt, options.text, inputs.text, options.json, task_options);
  }
  LMF_CHECK(std::fflush(stdout) == 0, "cannot write standard output");
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto options = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Loss and perplexity on a token shard, multiple-choice accuracy, bits-per-byte of a text");
  cmd->add_option("--checkpoint", options->checkpoint,
                  "Checkpoint directory (ours or a Hugging Face GPT-2 directory)")
      ->required();
  cmd->add_option("--data", options->data, "Token shard (.bin): loss and perplexity");
  cmd->add_option("--loss", options->loss,
                  "Chat shards (with X.bin.mask): all targets of each conversation, or only the assistant replies")
      ->capture_default_str();
  cmd->add_option("--task", options->tasks,
                  "Multiple-choice task, JSONL {\"ctx\", \"endings\", \"label\"} per line: acc and acc_norm (repeatable)");
  cmd->add_option("--text", options->text, "Text file (UTF-8): bits-per-byte and loss per token");
  cmd->add_option("--tokenizer", options->tokenizer,
                  "Tokenizer for --task/--text (default: the checkpoint's tokenizer.json or vocab.json + merges.txt)");
  add_integer<int64_t>(cmd, "--block-size", options->block_size, 0, INT32_MAX,
                  "Tokens per window (default and maximum: the model's context)");
  add_integer<int64_t>(cmd, "--batch-size", options->batch_size, 1, 1 << 16, "Windows per forward pass (--data, --text)")
      ->capture_default_str();
  add_integer<int64_t>(cmd, "--max-batches", options->max_batches, 0, int64_t{1} << 53, "Evaluate at most this many batches of --data (0: all)")
      ->capture_default_str();
  cmd->add_option("--device", options->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_flag("--json", options->json, "Print one JSON object per evaluation instead of lines");
  cmd->callback([options] { run_eval(*options); });
}

}  // namespace lmf::cli
