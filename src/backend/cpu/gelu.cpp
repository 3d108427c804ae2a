// GELU, tanh approximation as in GPT-2: gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// Gradient: dx = dout * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).
// Eigen's packet tanh (SIMD, where std::tanh is a libm call) over fixed vec::Block lanes, so results
// do not depend on buffer alignment (see vec_math.h).
#include <Eigen/Core>
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
// Elements per work item: a few L1-sized pages, so threads split even the (B*T, 4C) tensors evenly.
constexpr int64_t kBlock = 4096;

}  // namespace

void gelu_row(float* out, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += vec::kLanes) {
    const int64_t lanes = std::min(vec::kLanes, n - i);
    const vec::Block xa = vec::load(x + i, lanes, 0.f);
    vec::store(out + i, 0.5f * xa * (1.0f + (kSqrt2OverPi * (xa + kCubic * xa.cube())).tanh()), lanes);
  }
}

void gelu_forward(float* out, const float* x, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kBlock;
    gelu_row(out + i0, x + i0, std::min(kBlock, n - i0));
  }
}

void gelu_backward(float* dx, const float* dout, const float* x, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kBlock, len = std::min(kBlock, n - i0);
    for (int64_t i = i0; i < i0 + len; i += vec::kLanes) {
      const int64_t lanes = std::min(vec::kLanes, i0 + len - i);
      const vec::Block xa = vec::load(x + i, lanes, 0.f), ga = vec::load(dout + i, lanes, 0.f);
      const vec::Block th = (kSqrt2OverPi * (xa + kCubic * xa.cube())).tanh();
      vec::store(dx + i,
                 ga * (0.5f * (1.0f + th) +
                       0.5f * xa * (1.0f - th.square()) * (kSqrt2OverPi * (1.0f + 3.0f * kCubic * xa.square()))),
                 lanes);
    }
  }
}

}  // namespace lmf::cpu
