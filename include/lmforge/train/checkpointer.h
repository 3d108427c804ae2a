// Checkpointer: the checkpoints of a run directory. Each is a directory written atomically
// (io::AtomicDir) holding the model (model.safetensors + config.json), optimizer.safetensors (the
// AdamW moments, and Muon's momentum buffers when it trains, by parameter name, so a run resumes
// on any number of ranks), trainer_state.json
// (TrainState) and tokenizer.json. Periodic ones live in RUN/checkpoints/step_XXXXXXXX and the
// keep_last newest are kept; resume finds the newest whose state validates against its directory.
#pragma once
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "lmforge/core/rng.h"
#include "lmforge/data/loader.h"
#include "lmforge/io/safetensors.h"

namespace lmf::nn {
class CausalLM;
}
namespace lmf::optim {
class AdamW;
class Muon;
}
namespace lmf::data {
class Tokenizer;
}

namespace lmf::train {

/// Everything besides weights and moments that a bit-exact resume needs (trainer_state.json).
struct TrainState {
  int64_t step = 0;                   ///< optimizer steps completed
  double elapsed_s = 0;               ///< wall time of the run so far
  Generator::State dropout_rng;       ///< the model's dropout generator
  data::LoaderPosition loader;        ///< the training loader's next batch
  float best_val_loss = std::numeric_limits<float>::quiet_NaN();  ///< NaN: no evaluation yet
  int64_t best_step = -1;
  int64_t evals_without_improvement = 0;
  std::vector<float> recent_losses;   ///< the loss-spike guard's window
  std::string config_yaml;            ///< the run's resolved configuration

  /// trainer_state.json text (version 1).
  std::string to_json() const;
  /// Parses and validates trainer_state.json: version, types, and ranges (no negative step or
  /// position, no step beyond 2^53, best_step within [-1, step], finite values). Errors name
  /// `source` and the field.
  static TrainState from_json(const std::string& text, const std::string& source);
};

/// Muon's momentum buffers as checkpoint entries ("muon_momentum.NAME"), to append to the AdamW
/// moments given to write() / save().
io::NamedTensors muon_moments(const optim::Muon& muon);

class Checkpointer {
 public:
  /// Checkpoints of `run_dir`; save() keeps the `keep_last` newest periodic ones.
  explicit Checkpointer(std::filesystem::path run_dir, int64_t keep_last = 2);

  const std::filesystem::path& run_dir() const { return run_dir_; }
  /// RUN/checkpoints/step_XXXXXXXX.
  std::filesystem::path step_dir(int64_t step) const;

  /// Writes a complete checkpoint at `dir` atomically (replacing one already there): the model's
  /// files, `moments` ("exp_avg.NAME", "exp_avg_sq.NAME") with `optimizer_steps`, the state, and
  /// the tokenizer when given.
  void write(const std::filesystem::path& dir, const nn::CausalLM& model, const io::NamedTensors& moments,
             int64_t optimizer_steps, const TrainState& state, const data::Tokenizer* tokenizer = nullptr) const;
  /// write() at step_dir(state.step), then prune(). Returns the directory.
  std::filesystem::path save(const nn::CausalLM& model, const io::NamedTensors& moments, int64_t optimizer_steps,
                             const TrainState& state, const data::Tokenizer* tokenizer = nullptr) const;
  /// Deletes all but the keep_last newest periodic checkpoints (renamed aside first, so a kill
  /// never leaves a half-deleted directory that looks complete).
  void prune() const;
  /// Periodic checkpoints that have a trainer_state.json, oldest first.
  std::vector<std::filesystem::path> list() const;
  /// The newest periodic checkpoint older than `before` (empty: any) whose trainer_state.json
  /// validates against its directory; empty when there is none.
  std::filesystem::path newest_intact(const std::filesystem::path& before = {}) const;
  /// Removes directories a killed run left half-written (`*.tmp-*`, `*.deleting`).
  void remove_leftovers() const;

  /// Whether run_dir holds an earlier run's results (checkpoints, best/, final/, metrics.jsonl).
  bool has_previous_run() const;
  /// Moves an earlier run's results (and its config.yaml) into a new sibling directory
  /// RUN.previous-YYYYMMDD-HHMMSS[-N] and returns it; nothing is deleted.
  std::filesystem::path set_aside_previous_run() const;

  /// trainer_state.json of `dir`, validated; a step_XXXXXXXX directory must hold that step.
  static TrainState read_state(const std::filesystem::path& dir);
  /// Loads `dir` into `model` (same parameter names and shapes, else an lmf::Error) and the
  /// moments into `optimizer` (and the momentum buffers into `muon` when given); returns the
  /// state. The dropout generator is restored too. A checkpoint written with Muon state refuses
  /// to load without `muon`, and one without it refuses to load into `muon`.
  static TrainState load(const std::filesystem::path& dir, nn::CausalLM& model, optim::AdamW& optimizer,
                         optim::Muon* muon = nullptr);

 private:
  std::filesystem::path run_dir_;
  int64_t keep_last_;
};

}  // namespace lmf::train
