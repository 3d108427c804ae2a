// Learning-rate schedules (formulas documented in lmforge/optim/schedule.h).
#include "lmforge/optim/schedule.h"

#include <cmath>
#include <numbers>

#include "lmforge/core/error.h"

namespace lmf::optim {

void LrSchedule::validate() const {
  LMF_CHECK(lr >= 0.0 && std::isfinite(lr), "schedule: lr must be finite and >= 0, got ", lr);
  LMF_CHECK(warmup_iters >= 0, "schedule: warmup_iters must be >= 0, got ", warmup_iters);
  if (kind == ScheduleKind::cosine) {
    LMF_CHECK(min_lr >= 0.0 && min_lr <= lr, "schedule: min_lr must be in [0, lr = ", lr,
              "], got ", min_lr);
    LMF_CHECK(decay_iters > warmup_iters, "schedule: decay_iters (", decay_iters,
              ") must be greater than warmup_iters (", warmup_iters, ")");
  }
}

double LrSchedule::lr_at(int64_t it) const {
  if (it < warmup_iters) return lr * double(it + 1) / double(warmup_iters + 1);
  if (kind == ScheduleKind::constant) return lr;
  if (it > decay_iters) return min_lr;
  const double ratio = double(it - warmup_iters) / double(decay_iters - warmup_iters);
  const double coeff = 0.5 * (1.0 + std::cos(std::numbers::pi * ratio));
  return min_lr + coeff * (lr - min_lr);
}

}  // namespace lmf::optim
