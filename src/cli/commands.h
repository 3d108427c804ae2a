// Sub-commands of the lmforge executable. Each lives in its own cmd_<name>.cpp and adds itself to
// the CLI11 app; main.cpp lists them in one place.
#pragma once
#include <CLI/CLI.hpp>

namespace lmf::cli {

void add_chat_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_prepare_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_tokenizer_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_plot_command(CLI::App& app);

}  // namespace lmf::cli
