// Vectorised row primitives (max, exp, tanh) shared by the CPU kernels. Eigen's packet math gives
// SIMD exp and tanh on whatever the build targets (AVX-512, AVX2, SSE, NEON) without intrinsics
// here; std::exp/std::tanh in a loop stay scalar libm calls, which were ~27% of a small-model step.
#pragma once
#include <Eigen/Core>
#include <cstdint>

namespace lmf::cpu::vec {

using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;

inline float max_of(const float* x, int64_t n) { return ConstArrayMap(x, n).maxCoeff(); }

/// y (N) = exp(x - shift); returns the sum of y. y may alias x.
inline float exp_shift_sum(float* y, const float* x, int64_t n, float shift) {
  ArrayMap(y, n) = (ConstArrayMap(x, n) - shift).exp();
  return ArrayMap(y, n).sum();
}

/// sum of exp(x - shift), nothing stored.
inline float exp_shift_sum(const float* x, int64_t n, float shift) {
  return (ConstArrayMap(x, n) - shift).exp().sum();
}

/// y (N) = exp(x - shift) * factor. y may alias x.
inline void exp_shift_scale(float* y, const float* x, int64_t n, float shift, float factor) {
  ArrayMap(y, n) = (ConstArrayMap(x, n) - shift).exp() * factor;
}

}  // namespace lmf::cpu::vec
