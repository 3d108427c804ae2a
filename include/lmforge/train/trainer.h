// Trainer: the training loop behind `lmforge train`, usable from C++ with one's own model and
// callbacks. It owns the data loaders, the AdamW optimizer and the checkpoints of a run directory:
//   out_dir/config.yaml                 the resolved configuration
//   out_dir/metrics.jsonl               one JSON object per logged step, evaluation and event
//   out_dir/checkpoints/step_XXXXXXXX/  periodic checkpoints (the keep_last newest are kept)
//   out_dir/best/, out_dir/final/       best validation loss, end of training
// Each checkpoint directory holds model.safetensors + config.json (Hugging Face GPT-2 form),
// optimizer.safetensors, trainer_state.json and tokenizer.json, and is written atomically.
// The model, its gradients and the AdamW moments live on run.device (the CPU or one GPU per
// rank); checkpoints are copied to the host and are the same files whichever device wrote them.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "lmforge/nn/gpt.h"
#include "lmforge/train/config.h"

namespace lmf::train {

struct StepMetrics {
  int64_t step = 0;              ///< optimizer steps completed
  float train_loss = 0;          ///< mean over the step's micro-batches
  float lr = 0;
  double grad_norm = 0;          ///< before clipping
  double tokens_per_sec = 0;     ///< over the last logging interval
  double mfu = 0;                ///< model FLOPs utilisation over the interval (0..1); 0 when unknown
  double elapsed_s = 0;          ///< wall time of this run (resumed runs continue the count)
  bool skipped = false;          ///< the update was skipped (NaN/Inf with on_nan: skip, or a spike)
};

/// Optional hooks; any may be empty. Returning false from on_step stops training after
/// the current step (a final checkpoint is still written).
struct Callbacks {
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
  Trainer(Config config, std::unique_ptr<nn::GPT> model, Callbacks callbacks = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Runs (or resumes, per checkpoint.resume) until a stopping condition; returns why it stopped.
  TrainResult fit();
  /// Mean validation loss over the fixed validation batches (eval.batches of them).
  float evaluate();

  /// The model being trained, on run.device.
  nn::GPT& model();
  const Config& config() const;

  /// Installs SIGINT/SIGTERM handlers that make fit() finish its step, save and return.
  static void install_signal_handlers();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lmf::train
