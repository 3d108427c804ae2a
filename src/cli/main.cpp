// The lmforge executable: parses the command line with CLI11 and turns every lmf::Error (or any
// other exception) into one line on stderr and a non-zero exit.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "lmforge/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"lmforge: train, fine-tune and evaluate GPT language models", "lmforge"};
  app.set_version_flag("--version", std::string("lmforge ") + LMF_VERSION);
  app.require_subcommand(1);
  lmf::cli::add_convert_command(app);
  lmf::cli::add_eval_command(app);
  lmf::cli::add_generate_command(app);
  lmf::cli::add_prepare_command(app);
  lmf::cli::add_tokenize_command(app);
  lmf::cli::add_tokenizer_command(app);
  lmf::cli::add_train_command(app);
  lmf::cli::add_plot_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const lmf::Error& e) {
    std::fprintf(stderr, "lmforge: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lmforge: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
