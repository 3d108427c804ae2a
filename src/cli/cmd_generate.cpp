// `lmforge generate`: continues a prompt with a checkpoint and streams the text to stdout as each
// token is drawn. Token bytes are held back until they complete a UTF-8 character, because a
// byte-level BPE token may end in the middle of one.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "io/safe_file.h"
#include "cli/options.h"
#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/generate/generate.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/llama.h"
#include "lmforge/nn/lora.h"

namespace lmf::cli {

namespace {

namespace fs = std::filesystem;

struct GenerateCliOptions {
  std::string checkpoint;
  std::string prompt;
  std::string tokenizer;
  int64_t max_new_tokens = 200;
  float temperature = 1.f;
  int64_t top_k = 0;
  float top_p = 1.f;
  uint64_t seed = 1337;
  bool ignore_eos = false;
};

// Where generation ends: the model's eos ids (config.json's eos_token_id, Llama family), else the
// eos of a Hugging Face tokenizer (tokenizer_config.json). GPT-2 checkpoints carry none and run to
// --max-new-tokens, as they always did.
std::vector<int32_t> stop_ids(const nn::CausalLM& model, const data::Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  if (const auto* llama = dynamic_cast<const nn::Llama*>(&model))
    for (int64_t id : llama->config().eos_token_ids) ids.push_back(static_cast<int32_t>(id));
  if (const auto* hf = dynamic_cast<const data::HFTokenizer*>(&tokenizer); ids.empty() && hf && hf->eos_id() >= 0)
    ids.push_back(hf->eos_id());
  return ids;
}

// Length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence. Bytes that
// can never become valid UTF-8 are let through, so a broken model output still gets printed.
std::size_t complete_utf8_prefix(const std::string& bytes) {
  const std::size_t n = bytes.size();
  // A sequence is at most 4 bytes: look back at most 3 for its lead byte.
  for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(bytes[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const std::size_t length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return length > back ? n - back : n;
  }
  return n;
}

void write_out(const std::string& text) {
  if (text.empty()) return;
  LMF_CHECK(std::fwrite(text.data(), 1, text.size(), stdout) == text.size() &&
                std::fflush(stdout) == 0,
            "cannot write standard output");
}

std::unique_ptr<data::Tokenizer> open_tokenizer(const GenerateCliOptions& options) {
  if (!options.tokenizer.empty()) return data::load_tokenizer(options.tokenizer);
  const fs::path default_path = fs::path(options.checkpoint) / "tokenizer.json";
  LMF_CHECK(fs::exists(default_path), "checkpoint '", options.checkpoint,
            "' has no tokenizer.json; pass --tokenizer FILE.json or a GPT-2 files directory");
  return data::load_tokenizer(default_path.string());
}

void run_generate(const GenerateCliOptions& options) {
  LMF_CHECK(options.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got ",
            options.max_new_tokens);
  LMF_CHECK(std::isfinite(options.temperature) && options.temperature >= 0.f,
            "--temperature must be >= 0 (0 = greedy), got ", options.temperature);
  LMF_CHECK(options.top_k >= 0, "--top-k must be >= 0 (0 = no limit), got ", options.top_k);
  LMF_CHECK(options.top_p > 0.f && options.top_p <= 1.f,
            "--top-p must be in (0, 1] (1 = no limit), got ", options.top_p);
  LMF_CHECK(fs::is_directory(options.checkpoint), "checkpoint directory '", options.checkpoint,
            "' does not exist");

  const std::unique_ptr<data::Tokenizer> tokenizer = open_tokenizer(options);
  const std::unique_ptr<nn::CausalLM> gpt = io::load_model(options.checkpoint);
  // The model's forward applies unmerged adapters too; merged, each step skips their products.
  if (nn::has_lora(*gpt)) nn::merge_lora(*gpt);
  // NaN or Inf weights make every logit NaN, and sampling then prints garbage: refuse instead.
  for (const auto& [name, tensor] : gpt->named_parameters()) {
    for (const float v : tensor.to(Device::cpu()).to(DType::f32).to_vector())
      LMF_CHECK(std::isfinite(v), "checkpoint '", io::clip(options.checkpoint), "': weight '", name,
                "' holds NaN or Inf; this model cannot generate");
  }
  gpt->eval();
  const int64_t vocab = gpt->vocab_size();
  LMF_CHECK(tokenizer->vocab_size() <= vocab, "the tokenizer has ", tokenizer->vocab_size(),
            " tokens but the model only ", vocab, " (vocab_size in ", options.checkpoint,
            "/config.json): they do not belong together");

  // Special-token spellings in the prompt become their ids, so "<|endoftext|>" separates documents
  // as it did in training. An empty prompt starts from <|endoftext|> (GPT-2's document start), or
  // from id 0 for a tokenizer without it.
  std::vector<int32_t> prompt;
  try {
    prompt = tokenizer->encode(options.prompt, /*allow_special=*/true);
  } catch (const Error& e) {
    throw Error(str("--prompt: ", e.what()));
  }
  if (prompt.empty()) prompt.push_back(tokenizer->eot_id() >= 0 ? tokenizer->eot_id() : 0);

  generate::GenerateOptions gen_options;
  gen_options.max_new_tokens = options.max_new_tokens;
  gen_options.sampling = {options.temperature, options.top_k, options.top_p};
  // A padded model vocabulary has ids the tokenizer cannot decode: never draw them.
  gen_options.vocab_limit = tokenizer->vocab_size();
  Generator gen(options.seed);

  const std::vector<int32_t> stops = options.ignore_eos ? std::vector<int32_t>{} : stop_ids(*gpt, *tokenizer);

  write_out(options.prompt);
  int32_t previous = prompt.back();
  std::string pending;  // bytes of generated tokens not yet printed (an incomplete character)
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> generated =
      generate::generate(*gpt, prompt, gen_options, gen, [&](int32_t id) {
        // The eos itself is not printed (as transformers' skip_special_tokens).
        if (std::find(stops.begin(), stops.end(), id) != stops.end()) return false;
        // Decoded after the previous id and cut to what it adds: a SentencePiece-style decoder
        // strips the space that starts a text, which a token decoded alone would lose.
        const std::string context = tokenizer->decode({previous}), both = tokenizer->decode({previous, id});
        pending += both.compare(0, context.size(), context) == 0 ? both.substr(context.size()) : tokenizer->decode({id});
        previous = id;
        const std::size_t ready = complete_utf8_prefix(pending);
        write_out(pending.substr(0, ready));
        pending.erase(0, ready);
        return true;
      });
  write_out(pending + "\n");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "lmforge: %zu tokens in %.2f s (%.1f tokens/s)\n", generated.size(),
               seconds, seconds > 0 ? static_cast<double>(generated.size()) / seconds : 0.0);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto options = std::make_shared<GenerateCliOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Continue a prompt with a checkpoint, streaming the text");
  cmd->add_option("--checkpoint", options->checkpoint,
                  "Checkpoint directory (ours or a Hugging Face GPT-2 directory)")
      ->required();
  cmd->add_option("--prompt", options->prompt,
                  "Text to continue (default empty: start from <|endoftext|>, or id 0)");
  add_integer<int64_t>(cmd, "--max-new-tokens", options->max_new_tokens, 0, 1 << 20, "Tokens to generate")
      ->capture_default_str();
  add_real(cmd, "--temperature", options->temperature, 0.0, 1e6, "Softmax temperature; 0 = greedy")
      ->capture_default_str();
  add_integer<int64_t>(cmd, "--top-k", options->top_k, 0, INT32_MAX, "Sample from the k most likely tokens; 0 = all")
      ->capture_default_str();
  add_real(cmd, "--top-p", options->top_p, 0.0, 1.0,
                  "Sample from the smallest set of tokens with this much probability; 1 = all")
      ->capture_default_str();
  add_integer<uint64_t>(cmd, "--seed", options->seed, 0, UINT64_MAX, "Seed of the sampling generator")->capture_default_str();
  cmd->add_option("--tokenizer", options->tokenizer,
                  "Tokenizer JSON file or GPT-2 files directory (default: CHECKPOINT/tokenizer.json)");
  cmd->add_flag("--ignore-eos", options->ignore_eos,
               "Keep going past the model's eos token (config.json eos_token_id, or the tokenizer's eos)");
  cmd->callback([options] { run_generate(*options); });
}

}  // namespace lmf::cli
