// Learning-rate schedules: a constant rate, or nanoGPT's linear warmup followed by cosine decay to
// min_lr. A plain struct so the config layer can fill it and checkpoints need store only the step.
#pragma once
#include <cstdint>

namespace lmf::optim {

enum class ScheduleKind { constant, cosine };

/// lr_at(it) for iteration it = 0, 1, 2, ... (the step about to be taken):
///   it < warmup_iters:        lr · (it + 1) / (warmup_iters + 1)      (both kinds; never 0)
///   constant:                 lr
///   cosine, it > decay_iters: min_lr
///   cosine, otherwise:        min_lr + 0.5·(1 + cos(π·r))·(lr - min_lr),
///                             r = (it - warmup_iters) / (decay_iters - warmup_iters)
/// This is nanoGPT's get_lr (train.py) with the (it+1)/(warmup+1) warmup it uses today, rather
/// than the older it/warmup that made the first step a no-op.
struct LrSchedule {
  ScheduleKind kind = ScheduleKind::constant;
  double lr = 6e-4;
  double min_lr = 6e-5;
  int64_t warmup_iters = 0;
  int64_t decay_iters = 0;  ///< cosine only; must be > warmup_iters

  /// Throws lmf::Error naming the first inconsistent field.
  void validate() const;
  double lr_at(int64_t it) const;
};

}  // namespace lmf::optim
