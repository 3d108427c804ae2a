// Inverted dropout: element i is kept when philox_uniform(seed, base + i) >= p and then scaled by
// 1/(1-p). The mask is a pure function of (seed, base + i), so it is identical for any thread
// count and the backward recomputes it instead of storing it: dx = dout * keep / (1 - p).
#include "backend/cpu/cpu_kernels.h"
#include "lmforge/core/rng.h"

namespace lmf::cpu {

void dropout_apply(float* out, const float* x, int64_t n, float p, uint64_t seed, uint64_t base) {
  const float keep_scale = p < 1.f ? 1.0f / (1.0f - p) : 0.f;
#pragma omp parallel for schedule(static) if (n > 8192)
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = philox_uniform(seed, base + static_cast<uint64_t>(i)) >= p;
    out[i] = keep ? x[i] * keep_scale : 0.f;
  }
}

}  // namespace lmf::cpu
