// Guards of a training loop: LossGuard (a non-finite loss, a loss spike) and EarlyStopping (a
// metric that stopped improving). Plain state machines with no I/O, so a custom loop can use them
// and a checkpoint can save and restore them exactly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <vector>

#include "lmforge/train/config.h"

namespace lmf::train {

/// What LossGuard::check says about a step's loss.
enum class LossVerdict { ok, non_finite, spike };

/// NaN/Inf and loss-spike guard: a loss whose z-score against the last `window` accepted losses
/// exceeds spike_zscore (once `warmup` losses are known) is a spike.
class LossGuard {
 public:
  explicit LossGuard(float spike_zscore = 0.f, std::size_t window = 50, std::size_t warmup = 20);
  LossVerdict check(float loss) const;
  /// What check() compares a finite loss with: a spike is sd > 0 and (loss - mean) / sd > zscore,
  /// in double. zscore is 0 while the test is off (spike_zscore 0, or fewer than `warmup` losses).
  /// A GPU step evaluates the same test on the device against the reference of the last read.
  struct SpikeReference {
    double mean = 0, sd = 0;
    float zscore = 0;
  };
  SpikeReference spike_reference() const;
  /// Records the loss of an applied update.
  void accept(float loss);
  /// The window, oldest first (saved in checkpoints).
  std::vector<float> recent() const { return {recent_.begin(), recent_.end()}; }
  void set_recent(const std::vector<float>& losses) { recent_.assign(losses.begin(), losses.end()); }

 private:
  float spike_zscore_;
  std::size_t window_, warmup_;
  std::deque<float> recent_;
};

/// Tracks the best value of a metric (lower is better) and says when `patience` evaluations in a
/// row failed to improve it by more than min_delta. With enabled false it still tracks the best
/// (the trainer's best/ checkpoint) but never asks to stop.
class EarlyStopping {
 public:
  explicit EarlyStopping(const EarlyStoppingConfig& config = {});
  /// Records an evaluation; returns true when it is a new best.
  bool update(int64_t step, float value);
  /// Enabled, and the last `patience` evaluations did not improve.
  bool should_stop() const;
  float best() const { return best_; }          ///< NaN before the first evaluation
  int64_t best_step() const { return best_step_; }  ///< -1 before the first evaluation
  int64_t evals_without_improvement() const { return stale_; }
  bool restore_best() const { return config_.restore_best; }
  /// Restores the state a checkpoint saved.
  void set_state(float best, int64_t best_step, int64_t evals_without_improvement);

 private:
  EarlyStoppingConfig config_;
  float best_ = std::numeric_limits<float>::quiet_NaN();
  int64_t best_step_ = -1;
  int64_t stale_ = 0;
};

}  // namespace lmf::train
