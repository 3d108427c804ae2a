// `lmforge convert --merge-lora CKPT --output DIR`: folds a checkpoint's LoRA adapters into its
// base weights and writes a plain directory of the model's architecture (GPT-2: loads anywhere a
// GPT-2 does) that runs at the base model's speed. The output is written atomically and never silently
// replaced.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "io/safe_file.h"
#include "lmforge/core/error.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/lora.h"

namespace lmf::cli {

namespace {

namespace fs = std::filesystem;

struct ConvertOptions {
  std::string merge_lora;
  std::string output;
  bool force = false;
};

constexpr const char* kTokenizerFile = "tokenizer.json";

void run_merge_lora(const ConvertOptions& options) {
  const fs::path source(options.merge_lora), output(options.output);
  LMF_CHECK(fs::is_directory(source), "--merge-lora: '", options.merge_lora,
            "' is not a checkpoint directory");
  std::error_code ec;
  LMF_CHECK(!io::path_within(source, output) && !io::path_within(output, source),
            "--output: '", io::clip(options.output), "' must differ from the checkpoint '",
            io::clip(options.merge_lora), "', lie outside it and not contain it");
  LMF_CHECK(options.force || !fs::exists(fs::symlink_status(output, ec)), "--output: '",
            io::clip(options.output), "' already exists; pass --force to replace it");
  // --force replaces only a model directory (what this command writes), never anything else.
  io::check_replaceable_dir(output, {io::kModelFile, io::kConfigFile, kTokenizerFile}, "--output");

  LMF_CHECK(io::has_adapter_files(source), "--merge-lora: '", options.merge_lora,
            "' has no LoRA "
            "adapters (no ",
            io::kAdapterFile, " or ", io::kAdapterConfigFile, "); nothing to merge");
  std::unique_ptr<nn::CausalLM> gpt = io::load_model(source);
  const nn::LoraOptions lora = *nn::lora_options(*gpt);
  nn::merge_lora(*gpt);
  io::AtomicDir dir(output);
  io::write_model_files(*gpt, dir.path());
  if (fs::exists(source / kTokenizerFile)) {
    fs::copy_file(source / kTokenizerFile, dir.path() / kTokenizerFile, ec);
    LMF_CHECK(!ec, (source / kTokenizerFile).string(), ": cannot copy: ", ec.message());
  }
  dir.commit();
  std::string targets;
  for (const auto& t : lora.targets) targets += (targets.empty() ? "" : ", ") + t;
  std::fprintf(stderr, "lmforge convert: merged LoRA adapters (rank %lld, alpha %g, %s) into %s\n",
               static_cast<long long>(lora.rank), static_cast<double>(lora.alpha), targets.c_str(),
               options.output.c_str());
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto options = std::make_shared<ConvertOptions>();
  CLI::App* cmd =
      app.add_subcommand("convert", "Convert checkpoints (merge LoRA adapters into the base)");
  cmd->add_option("--merge-lora", options->merge_lora,
                  "Checkpoint directory with LoRA adapters to merge into its base weights")
      ->required();
  cmd->add_option("--output", options->output, "Directory to write the plain (unadapted) checkpoint to")
      ->required();
  cmd->add_flag("--force", options->force, "Replace --output if it exists");
  cmd->callback([options] { run_merge_lora(*options); });
}

}  // namespace lmf::cli
