// `lmforge prepare`: text files and directories -> train.bin, val.bin, tokenizer.json, meta.json.
// The work is lmf::data::prepare_dataset; this file only maps command-line options onto it.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "lmforge/data/prepare.h"

namespace lmf::cli {

void add_prepare_command(CLI::App& app) {
  auto options = std::make_shared<data::PrepareOptions>();
  CLI::App* cmd = app.add_subcommand(
      "prepare", "Tokenize text files/directories into train.bin and val.bin token shards");
  cmd->add_option("--input", options->inputs,
                  "Text files or directories (walked recursively in sorted order)")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--out", options->out_dir, "Output directory")->required();
  cmd->add_option("--format", options->format,
                  "text: plain text documents; chat: JSONL conversations ({\"messages\": [...]} or "
                  "{\"prompt\", \"completion\"}), rendered with the tokenizer's chat template, with a loss "
                  "mask of the assistant tokens beside each shard")
      ->check(CLI::IsMember({"text", "chat"}))
      ->capture_default_str();
  cmd->add_option("--tokenizer", options->tokenizer,
                  "'char' (learned from the input), a tokenizer JSON file, a directory with a "
                  "Hugging Face tokenizer.json, or a directory with GPT-2's vocab.json+merges.txt "
                  "or encoder.json+vocab.bpe")
      ->capture_default_str();
  add_real(cmd, "--val-fraction", options->val_fraction, 0.0, 0.999999,
                  "Last fraction of every document that goes to val.bin")
      ->capture_default_str();
  cmd->add_flag("--eot", options->eot, "Put <|endoftext|> before every document part");
  cmd->add_option("--special-token", options->special_tokens,
                  "Reserve TEXT as a special token of the learned char tokenizer (repeatable; e.g. "
                  "<|im_start|> and <|im_end|> for chat fine-tuning later)");
  add_integer<int>(cmd, "--threads", options->threads, 0, io::kMaxThreads, "Tokenizer threads (0 = all cores)")
      ->capture_default_str();
  cmd->callback([options] {
    data::PrepareResult result = data::prepare_dataset(*options);
    std::printf(
        "prepared %zu file(s) into %s: %lld train tokens, %lld val tokens, vocab size %lld",
        result.files.size(), options->out_dir.c_str(), static_cast<long long>(result.train_tokens),
        static_cast<long long>(result.val_tokens), static_cast<long long>(result.vocab_size));
    if (!result.skipped.empty()) std::printf(" (%zu file(s) skipped)", result.skipped.size());
    std::printf("\n");
  });
}

}  // namespace lmf::cli
