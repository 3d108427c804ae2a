// `lmforge tokenizer train|info`: learns byte-level BPE merges from a corpus (GPT-2's
// pre-tokenization, deterministic tie-breaks) and describes a tokenizer file.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "data/progress.h"
#include "lmforge/core/error.h"
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
  info->add_option("spec", *spec, "A tokenizer JSON file or a GPT-2 directory")->required();
  info->callback([spec] {
    auto tokenizer = data::load_tokenizer(*spec);
    std::printf("type: %s\nvocab_size: %lld\n", tokenizer->type().c_str(),
                static_cast<long long>(tokenizer->vocab_size()));
    for (const auto& [name, id] : tokenizer->special_tokens()) {
      std::printf("special: %s = %d\n", name.c_str(), id);
    }
  });
}

}  // namespace lmf::cli
