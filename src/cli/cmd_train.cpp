// `lmforge train CONFIG [KEY=VALUE ...]`: loads and validates the YAML config (with overrides),
// then runs the Trainer. SIGINT/SIGTERM finish the current step, save a checkpoint and exit 0.
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "cli/commands.h"
#include "lmforge/dist/comm.h"
#include "lmforge/train/trainer.h"

namespace lmf::cli {

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train or fine-tune a GPT from a YAML config");
  auto config_path = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  cmd->add_option("config", *config_path, "YAML config file (see docs/config.md)")->required();
  cmd->add_option("overrides", *overrides, "Overrides as dotted KEY=VALUE, e.g. training.lr=3e-4");
  cmd->callback([config_path, overrides] {
    train::Config config = train::Config::load(*config_path, *overrides);
    train::Trainer::install_signal_handlers();
    train::Trainer trainer(std::move(config));
    const auto& c = trainer.config();
    // Under mpirun every rank runs this; rank 0 alone speaks, as it alone logs and checkpoints.
    const bool root = dist::launch_info().rank == 0;
    if (root)
      std::fprintf(stderr, "%s\n", fmt::format("lmforge train: {} | {} parameters | out_dir {}", c.run.name,
                                            trainer.model().num_parameters(), c.run.out_dir).c_str());
    const train::TrainResult r = trainer.fit();
    std::string summary = fmt::format("done: {} steps ({}), last train loss {:.4f}", r.steps, r.stop_reason,
                                      r.last_train_loss);
    if (!std::isnan(r.best_val_loss))
      summary += fmt::format(", best val loss {:.4f} at step {}", r.best_val_loss, r.best_step);
    if (r.stop_reason == "signal") summary += "; interrupted: resume with the same command";
    if (root) std::fprintf(stderr, "%s\n", summary.c_str());
  });
}

}  // namespace lmf::cli
