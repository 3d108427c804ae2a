// The lmforge executable: parses the command line with CLI11 and turns every lmf::Error (or any
// other exception) into one line on stderr and a non-zero exit (docs/cli.md: 2 for a command line
// that does not parse, 1 for everything else).
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "cli/commands.h"
#include "io/safe_file.h"
#include "lmforge/core/error.h"

namespace {

// One line: messages may quote user text holding newlines or NUL bytes (a NUL would also end
// the printed line early), so control characters are shown as '?'.
void print_error(const std::string& message) {
  std::string line = lmf::io::clip(message, 2000);
  for (char& c : line)
    if (static_cast<unsigned char>(c) < 0x20 && c != '\t') c = '?';
  std::fprintf(stderr, "lmforge: error: %s\n", line.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lmforge: train, fine-tune and evaluate GPT language models", "lmforge"};
  app.set_version_flag("--version", std::string("lmforge ") + LMF_VERSION);
  app.require_subcommand(1);
  lmf::cli::add_chat_command(app);
  lmf::cli::add_convert_command(app);
  lmf::cli::add_eval_command(app);
  lmf::cli::add_generate_command(app);
  lmf::cli::add_prepare_command(app);
  lmf::cli::add_tokenize_command(app);
  lmf::cli::add_tokenizer_command(app);
  lmf::cli::add_train_command(app);
  lmf::cli::add_plot_command(app);
  // A first word that is neither an option nor a command is named as such, rather than CLI11's
  // "a subcommand is required".
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known = known || sub->check_name(argv[1]);
    if (!known) {
      print_error(std::string("unknown command '") + lmf::io::clip(argv[1], 80) +
                  "' (run 'lmforge --help' for the list)");
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    print_error(e.what());
    return 2;
  } catch (const lmf::Error& e) {
    print_error(e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    print_error("out of memory (an input or setting asks for more memory than this machine has)");
    return 1;
  } catch (const std::exception& e) {
    print_error(std::string("internal error: ") + e.what());
    return 1;
  }
  return 0;
}
