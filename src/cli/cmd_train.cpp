// `lmforge train CONFIG [KEY=VALUE ...]`: loads and validates the YAML config (with overrides),
// then runs the Trainer. SIGINT/SIGTERM finish the current step, save a checkpoint and exit 0.
// --force is checkpoint.force_fresh=true: a fresh start sets an earlier run in out_dir aside.
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
  auto force = std::make_shared<bool>(false);
  cmd->add_option("overrides", *overrides, "Overrides as dotted KEY=VALUE, e.g. training.lr=3e-4");
  cmd->add_flag("--force", *force,
                "With checkpoint.resume: never, move an earlier run in run.out_dir aside instead of refusing "
                "(checkpoint.force_fresh=true)");
  cmd->callback([config_path, overrides, force] {
    std::vector<std::string> all = *overrides;
    if (*force) all.push_back("checkpoint.force_fresh=true");
    train::Config config = train::Config::load(*config_path, all);
    train::Trainer::install_signal_handlers();
    // Under mpirun every rank runs this; rank 0 alone speaks, as it alone logs and checkpoints.
    const bool root = dist::launch_info().rank == 0;
    // The banner waits until fit() holds the run directory, so that a refusal (another process
    // training there, an earlier run in the way) is the only line printed.
    train::Trainer* self = nullptr;
    train::Callbacks callbacks;
    callbacks.on_start = [&self, root](int64_t) {
      const auto& c = self->config();
      if (root)
        std::fprintf(stderr, "%s\n", fmt::format("lmforge train: {} | {} parameters | out_dir {}", c.run.name,
                                                self->model().num_parameters(), c.run.out_dir).c_str());
    };
    train::Trainer trainer(std::move(config), callbacks);
    self = &trainer;
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
