// LossGuard and EarlyStopping: the trainer's decisions about a step's loss and about stopping,
// kept free of I/O so that their state is a handful of numbers a checkpoint restores exactly.
#include "lmforge/train/guards.h"

#include <cmath>

namespace lmf::train {

LossGuard::LossGuard(float spike_zscore, std::size_t window, std::size_t warmup)
    : spike_zscore_(spike_zscore), window_(window), warmup_(warmup) {}

LossGuard::SpikeReference LossGuard::spike_reference() const {
  SpikeReference out;
  if (spike_zscore_ <= 0 || recent_.size() < warmup_) return out;
  double mean = 0, var = 0;
  for (float l : recent_) mean += l;
  mean /= recent_.size();
  for (float l : recent_) var += (l - mean) * (l - mean);
  out.mean = mean;
  out.sd = std::sqrt(var / recent_.size());
  out.zscore = spike_zscore_;
  return out;
}

LossVerdict LossGuard::check(float loss) const {
  if (!std::isfinite(loss)) return LossVerdict::non_finite;
  const SpikeReference r = spike_reference();
  if (r.zscore <= 0) return LossVerdict::ok;
  return r.sd > 0 && (loss - r.mean) / r.sd > r.zscore ? LossVerdict::spike : LossVerdict::ok;
}

void LossGuard::accept(float loss) {
  recent_.push_back(loss);
  if (recent_.size() > window_) recent_.pop_front();
}

EarlyStopping::EarlyStopping(const EarlyStoppingConfig& config) : config_(config) {}

bool EarlyStopping::update(int64_t step, float value) {
  const bool improved = std::isnan(best_) || value < best_ - config_.min_delta;
  if (improved) {
    best_ = value;
    best_step_ = step;
    stale_ = 0;
  } else {
    ++stale_;
  }
  return improved;
}

bool EarlyStopping::should_stop() const { return config_.enabled && stale_ >= config_.patience; }

void EarlyStopping::set_state(float best, int64_t best_step, int64_t evals_without_improvement) {
  best_ = best;
  best_step_ = best_step;
  stale_ = evals_without_improvement;
}

}  // namespace lmf::train
