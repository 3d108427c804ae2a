// GELU, tanh approximation as in GPT-2: gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// Gradient: dx = dout * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).
// Eigen array expressions over fixed blocks: its packet tanh is SIMD, where std::tanh is a libm call.
#include <Eigen/Core>
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"

namespace lmf::cpu {
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
// Elements per work item: a few L1-sized pages, so threads split even the (B*T, 4C) tensors evenly.
constexpr int64_t kBlock = 4096;

using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;
}  // namespace

void gelu_forward(float* out, const float* x, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kBlock, len = std::min(kBlock, n - i0);
    const ConstArrayMap xa(x + i0, len);  // (len)
    ArrayMap(out + i0, len) =
        0.5f * xa * (1.0f + (kSqrt2OverPi * (xa + kCubic * xa.cube())).tanh());
  }
}

void gelu_backward(float* dx, const float* dout, const float* x, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kBlock, len = std::min(kBlock, n - i0);
    const ConstArrayMap xa(x + i0, len), ga(dout + i0, len);  // (len)
    ArrayMap d(dx + i0, len);
    // tanh goes through dx as scratch so it is evaluated once per element.
    d = (kSqrt2OverPi * (xa + kCubic * xa.cube())).tanh();
    d = ga * (0.5f * (1.0f + d) +
              0.5f * xa * (1.0f - d.square()) * (kSqrt2OverPi * (1.0f + 3.0f * kCubic * xa.square())));
  }
}

}  // namespace lmf::cpu
