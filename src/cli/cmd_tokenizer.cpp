// `lmforge tokenizer train|info|chat-template`: learns byte-level BPE merges from a corpus (GPT-2's
// pre-tokenization, deterministic tie-breaks), describes a tokenizer file, and renders a
// conversation through a model's chat template (for users checking their data).
#include <cstdio>
#include <iostream>
#include <iterator>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "data/progress.h"
#include "lmforge/core/error.h"
#include "lmforge/data/chat_template.h"
#include "lmforge/data/prepare.h"
#include "lmforge/data/tokenizer.h"

namespace lmf::cli {

namespace {

struct TrainOptions {
  std::vector<std::string> inputs;
  int64_t vocab_size = 0;
  std::string output;
  int threads = 0;
};

void run_train(const TrainOptions& options) {
  LMF_CHECK(options.vocab_size >= 257, "--vocab-size ", options.vocab_size,
            " is too small: byte-level BPE needs 256 byte tokens plus <|endoftext|>");
  // The output must not overwrite an input: not one named on the command line, nor an existing
  // file inside an input directory (it would be read as text).
  std::error_code ec;
  for (const auto& input : options.inputs) {
    const bool is_dir = std::filesystem::is_directory(input, ec);
    LMF_CHECK(!io::path_within(options.output, input) ||
                  (is_dir && !std::filesystem::exists(options.output, ec)),
              "--output: '", io::clip(options.output), "' is (or is inside) the input '",
              io::clip(input), "'; refusing to overwrite an input");
  }
  data::PretokenCounts counts = data::count_pretokens(options.inputs, options.threads);
  data::BpeTrainOptions train;
  train.vocab_size = options.vocab_size;
  const int64_t wanted = options.vocab_size - 257;
  auto bar = std::make_shared<data::ProgressBar>("merges", wanted, "merges");
  train.on_progress = [bar](int64_t done, int64_t) { bar->update(done); };
  auto tokenizer = data::train_bpe(counts, train);
  bar->finish();
  tokenizer->save(options.output);
  std::printf(
      "trained byte-level BPE: %lld tokens (%zu merges) from %zu distinct pre-tokens -> %s\n",
      static_cast<long long>(tokenizer->vocab_size()), tokenizer->merges().size(),
      counts.unique_pieces(), options.output.c_str());
  if (tokenizer->vocab_size() < options.vocab_size) {
    std::fprintf(stderr,
                 "lmforge: warning: the corpus ran out of pairs to merge; the vocabulary "
                 "has %lld tokens, not %lld\n",
                 static_cast<long long>(tokenizer->vocab_size()),
                 static_cast<long long>(options.vocab_size));
  }
}

}  // namespace

void add_tokenizer_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("tokenizer", "Train or inspect tokenizers");
  cmd->require_subcommand(1);

  auto options = std::make_shared<TrainOptions>();
  CLI::App* train = cmd->add_subcommand(
      "train", "Learn a byte-level BPE tokenizer (GPT-2 style) from text files/directories");
  train->add_option("--input", options->inputs, "Text files or directories")
      ->required()
      ->expected(1, -1);
  add_integer<int64_t>(train, "--vocab-size", options->vocab_size, 0, INT32_MAX,
                       "Vocabulary size, 256 byte tokens and <|endoftext|> included")
      ->required();
  train->add_option("--output", options->output, "Tokenizer JSON file to write")->required();
  add_integer<int>(train, "--threads", options->threads, 0, io::kMaxThreads, "Counting threads (0 = all cores)");
  train->callback([options] { run_train(*options); });

  auto spec = std::make_shared<std::string>();
  CLI::App* info = cmd->add_subcommand("info", "Print a tokenizer's type, vocab size and specials");
  info->add_option("spec", *spec, "A tokenizer JSON file, a tokenizer.json directory or a GPT-2 directory")->required();
  info->callback([spec] {
    auto tokenizer = data::load_tokenizer(*spec);
    std::printf("type: %s\nvocab_size: %lld\n", tokenizer->type().c_str(),
                static_cast<long long>(tokenizer->vocab_size()));
    for (const auto& [name, id] : tokenizer->special_tokens()) {
      std::printf("special: %s = %d\n", name.c_str(), id);
    }
    if (const auto* hf = dynamic_cast<const data::HFTokenizer*>(tokenizer.get())) {
      std::printf("vocabulary: %s\nnormalizer: %s\npre_tokenizer: %s\ndecoder: %s\n",
                  hf->byte_level() ? "byte-level" : "sentencepiece-style",
                  hf->normalizer_kind().c_str(), hf->pretokenizer_kind().c_str(),
                  hf->decoder_kind().c_str());
      std::printf("added_tokens: %zu\n", hf->added_tokens().size());
      std::printf("bos: %s = %d\neos: %s = %d\n", hf->bos_token().c_str(), hf->bos_id(),
                  hf->eos_token().c_str(), hf->eos_id());
    }
  });

  auto chat_dir = std::make_shared<std::string>();
  auto generation_prompt = std::make_shared<bool>(false);
  CLI::App* chat = cmd->add_subcommand(
      "chat-template",
      "Render one {\"messages\": [...]} object from stdin with a tokenizer's chat template");
  chat->add_option("--tokenizer", *chat_dir,
                   "Hugging Face tokenizer directory (tokenizer_config.json; ChatML without one)")
      ->required();
  chat->add_flag("--add-generation-prompt", *generation_prompt,
                 "Append the assistant header that starts the model's reply");
  chat->callback([chat_dir, generation_prompt] {
    data::ChatTemplate chat_template = data::ChatTemplate::load(*chat_dir);
    std::string input{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    auto messages = data::parse_chat_messages(input, "stdin");
    data::ChatRenderOptions options;
    options.add_generation_prompt = *generation_prompt;
    std::string text = chat_template.render(messages, options);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

}  // namespace lmf::cli
