// `lmforge convert --merge-lora CKPT --output DIR`: folds a checkpoint's LoRA adapters into its
// base weights and writes a plain directory of the model's architecture (GPT-2: loads anywhere a
// GPT-2 does) that runs at the base model's speed. `lmforge convert --to gguf --checkpoint CKPT
// --output FILE.gguf`: the model and its tokenizer as one GGUF file for llama.cpp (adapters merged
// on the way). Outputs are written atomically and never silently replaced.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "io/safe_file.h"
#include "lmforge/core/error.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/gguf.h"
#include "lmforge/nn/lora.h"

namespace lmf::cli {

namespace {

namespace fs = std::filesystem;

struct ConvertOptions {
  std::string merge_lora;
  std::string to;
  std::string checkpoint;
  std::string tokenizer;
  std::string dtype = "f16";
  std::string name;
  std::string output;
  bool force = false;
};

constexpr const char* kTokenizerFile = "tokenizer.json";
constexpr const char* kTokenizerFiles[] = {kTokenizerFile, "tokenizer_config.json", "chat_template.jinja"};

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
  io::check_replaceable_dir(output, {io::kModelFile, io::kConfigFile, kTokenizerFile, "tokenizer_config.json", "chat_template.jinja"},
                            "--output");

  LMF_CHECK(io::has_adapter_files(source), "--merge-lora: '", options.merge_lora,
            "' has no LoRA "
            "adapters (no ",
            io::kAdapterFile, " or ", io::kAdapterConfigFile, "); nothing to merge");
  std::unique_ptr<nn::CausalLM> gpt = io::load_model(source);
  const nn::LoraOptions lora = *nn::lora_options(*gpt);
  nn::merge_lora(*gpt);
  io::AtomicDir dir(output);
  io::write_model_files(*gpt, dir.path());
  // The tokenizer travels whole: its eos, bos and chat template live in the two files beside it.
  for (const char* name : kTokenizerFiles) {
    if (!fs::exists(source / name)) continue;
    fs::copy_file(source / name, dir.path() / name, ec);
    LMF_CHECK(!ec, (source / name).string(), ": cannot copy: ", ec.message());
  }
  dir.commit();
  std::string targets;
  for (const auto& t : lora.targets) targets += (targets.empty() ? "" : ", ") + t;
  std::fprintf(stderr, "lmforge convert: merged LoRA adapters (rank %lld, alpha %g, %s) into %s\n",
               static_cast<long long>(lora.rank), static_cast<double>(lora.alpha), targets.c_str(),
               options.output.c_str());
}

void run_gguf(const ConvertOptions& options) {
  LMF_CHECK(options.to == "gguf", "--to: '", io::clip(options.to), "' is not a format convert writes (gguf)");
  LMF_CHECK(!options.checkpoint.empty(), "--to gguf needs --checkpoint DIR");
  const io::GgufDType dtype = io::parse_gguf_dtype(options.dtype);  // before any loading
  const fs::path source(options.checkpoint), output(options.output);
  LMF_CHECK(fs::is_directory(source), "--checkpoint: '", io::clip(options.checkpoint), "' is not a checkpoint directory");
  const std::string tokenizer =
      options.tokenizer.empty() ? (source / kTokenizerFile).string() : options.tokenizer;
  std::error_code ec;
  LMF_CHECK(!options.tokenizer.empty() || fs::exists(tokenizer, ec), "--checkpoint: '", io::clip(options.checkpoint),
            "' has no ", kTokenizerFile, "; pass --tokenizer FILE.json or DIR");
  LMF_CHECK(!io::path_within(output, source) && !io::path_within(output, tokenizer), "--output: '",
            io::clip(options.output), "' lies inside the checkpoint or over the tokenizer it reads");
  const auto status = fs::symlink_status(output, ec);
  if (fs::exists(status)) {
    LMF_CHECK(options.force, "--output: '", io::clip(options.output), "' already exists; pass --force to replace it");
    LMF_CHECK(fs::is_regular_file(status), "--output: '", io::clip(options.output),
              "' is not a regular file; --force replaces only a file");
  }

  std::unique_ptr<nn::CausalLM> model = io::load_model(source);
  if (nn::lora_options(*model)) nn::merge_lora(*model);
  io::write_gguf(*model, tokenizer, output, {dtype, options.name});
  std::fprintf(stderr, "lmforge convert: wrote %s (%s, %s)\n", options.output.c_str(), model->arch().c_str(),
               options.dtype.c_str());
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto options = std::make_shared<ConvertOptions>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert checkpoints (merge LoRA adapters into the base; export GGUF for llama.cpp)");
  CLI::Option* merge = cmd->add_option("--merge-lora", options->merge_lora,
                                       "Checkpoint directory with LoRA adapters to merge into its base weights");
  CLI::Option* to = cmd->add_option("--to", options->to, "Export format: gguf (a single file for llama.cpp)");
  merge->excludes(to);
  cmd->add_option("--checkpoint", options->checkpoint, "Checkpoint directory to export (--to gguf)")->needs(to);
  cmd->add_option("--tokenizer", options->tokenizer,
                  "Tokenizer to embed (--to gguf; default: CHECKPOINT/tokenizer.json)")
      ->needs(to);
  cmd->add_option("--dtype", options->dtype, "Weight type of the GGUF file: f32, f16 (default), bf16, q8_0")
      ->needs(to);
  cmd->add_option("--name", options->name, "general.name of the GGUF file (default: the output's file name)")
      ->needs(to);
  cmd->add_option("--output", options->output,
                  "Directory of the plain checkpoint (--merge-lora) or the .gguf file (--to gguf)")
      ->required();
  cmd->add_flag("--force", options->force, "Replace --output if it exists");
  cmd->callback([options] {
    LMF_CHECK(!options->merge_lora.empty() || !options->to.empty(), "convert needs --merge-lora CKPT or --to gguf");
    if (!options->to.empty()) run_gguf(*options);
    else run_merge_lora(*options);
  });
}

}  // namespace lmf::cli
