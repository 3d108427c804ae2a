// Trainer: the training loop behind `lmforge train`, usable from C++ with one's own model and
// callbacks. fit() composes the public parts a custom loop can also use alone: RunLock (one
// process per run directory), Checkpointer (atomic checkpoints, keep-last, resume), RunLog
// (metrics.jsonl and progress), DataParallel (gradient buckets, ZeRO-1), LossGuard and
// EarlyStopping. Files of a run directory:
//   out_dir/config.yaml                 the resolved configuration
//   out_dir/metrics.jsonl               one JSON object per logged step, evaluation and event
//   out_dir/checkpoints/step_XXXXXXXX/  periodic checkpoints (the keep_last newest are kept)
//   out_dir/best/, out_dir/final/       best validation loss, end of training
//   out_dir/.lock                       held (flock) while a process trains in the directory
// The model, its gradients and the AdamW moments live on run.device (the CPU or one GPU per
// rank); checkpoints are copied to the host and are the same files whichever device wrote them.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "lmforge/nn/causal_lm.h"
#include "lmforge/train/config.h"
#include "lmforge/train/run_log.h"

namespace lmf::train {

/// Optional hooks; any may be empty. Returning false from on_step stops training after
/// the current step (a final checkpoint is still written).
struct Callbacks {
  /// Called once fit() holds the run directory and has resumed (at `step`) or started afresh,
  /// before the first step.
  std::function<void(int64_t step)> on_start;
  std::function<bool(const StepMetrics&)> on_step;
  std::function<void(int64_t step, float val_loss)> on_eval;
  std::function<void(const std::string& event, const std::string& detail)> on_event;
};

struct TrainResult {
  int64_t steps = 0;             ///< optimizer steps completed in total
  float last_train_loss = 0;
  float best_val_loss = 0;       ///< NaN when there was no validation
  int64_t best_step = -1;
  std::string stop_reason;       ///< "max_steps", "max_tokens", "max_time", "early_stop", "signal", "callback"
};

class Trainer {
 public:
  /// Validates everything the config names (files, vocabulary, sizes) and builds the model it
  /// describes (scratch, our checkpoint, or a Hugging Face GPT-2 directory). No work starts here.
  explicit Trainer(Config config, Callbacks callbacks = {});
  /// Trains a caller-built model instead of config.model (config.model.init must be "scratch").
  /// The model is moved to run.device if it is elsewhere.
  Trainer(Config config, std::unique_ptr<nn::CausalLM> model, Callbacks callbacks = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Runs (or resumes, per checkpoint.resume) until a stopping condition; returns why it stopped.
  /// Holds the run directory's lock while it runs; another process training in run.out_dir is
  /// an lmf::Error. With checkpoint.resume: never, an earlier run's results in run.out_dir are an
  /// error unless checkpoint.force_fresh sets them aside.
  TrainResult fit();
  /// Mean validation loss over the fixed validation batches (eval.batches of them).
  float evaluate();

  /// The model being trained, on run.device.
  nn::CausalLM& model();
  const Config& config() const;

  /// Installs SIGINT/SIGTERM handlers that make fit() finish its step, save and return.
  static void install_signal_handlers();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lmf::train
