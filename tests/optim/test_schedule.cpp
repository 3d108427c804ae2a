// Learning-rate schedules at the key iterations (first, end of warmup, middle and end of decay,
// past the end) against the formula written out independently here.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/optim/schedule.h"

using Catch::Matchers::Contains;
using lmf::optim::LrSchedule;
using lmf::optim::ScheduleKind;

namespace {
// nanoGPT train.py get_lr(), transcribed.
double nanogpt_lr(int64_t it, double lr, double min_lr, int64_t warmup, int64_t decay) {
  if (it < warmup) return lr * (it + 1) / (warmup + 1);
  if (it > decay) return min_lr;
  const double ratio = double(it - warmup) / double(decay - warmup);
  return min_lr + 0.5 * (1.0 + std::cos(3.141592653589793 * ratio)) * (lr - min_lr);
}
}  // namespace

TEST_CASE("cosine schedule warms up linearly then decays to min_lr like nanoGPT") {
  LrSchedule s{ScheduleKind::cosine, 6e-4, 6e-5, 100, 1000};
  s.validate();
  CHECK(s.lr_at(0) == Approx(6e-4 / 101));
  CHECK(s.lr_at(49) == Approx(6e-4 * 50 / 101));
  CHECK(s.lr_at(99) == Approx(6e-4 * 100 / 101));
  CHECK(s.lr_at(100) == Approx(6e-4));
  CHECK(s.lr_at(550) == Approx((6e-4 + 6e-5) / 2));
  CHECK(s.lr_at(1000) == Approx(6e-5));
  CHECK(s.lr_at(5000) == Approx(6e-5));
  for (int64_t it : {0, 1, 17, 99, 100, 101, 333, 777, 999, 1000, 1001})
    CHECK(s.lr_at(it) == Approx(nanogpt_lr(it, 6e-4, 6e-5, 100, 1000)).epsilon(1e-12));
  for (int64_t it = 101; it <= 1000; ++it) REQUIRE(s.lr_at(it) <= s.lr_at(it - 1));
}

TEST_CASE("constant schedule holds lr after its optional warmup") {
  LrSchedule s{ScheduleKind::constant, 1e-3, 0.0, 0, 0};
  s.validate();
  CHECK(s.lr_at(0) == 1e-3);
  CHECK(s.lr_at(123456) == 1e-3);
  s.warmup_iters = 3;
  CHECK(s.lr_at(0) == Approx(1e-3 / 4));
  CHECK(s.lr_at(2) == Approx(3e-3 / 4));
  CHECK(s.lr_at(3) == 1e-3);
}

TEST_CASE("schedule validation names the inconsistent field") {
  LrSchedule s{ScheduleKind::cosine, 1e-3, 1e-4, 100, 100};
  CHECK_THROWS_WITH(s.validate(), Contains("decay_iters (100) must be greater than warmup_iters"));
  s.decay_iters = 200;
  s.min_lr = 1e-2;
  CHECK_THROWS_WITH(s.validate(), Contains("min_lr"));
  s.min_lr = 0;
  s.warmup_iters = -1;
  CHECK_THROWS_WITH(s.validate(), Contains("warmup_iters"));
}
