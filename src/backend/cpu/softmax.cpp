// Softmax over the last dim: x (N, C) -> y (N, C), each row shifted by its max for stability.
// Gradient: dx = y * (dy - sum_c(dy * y)); the forward output y is what backward keeps.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {

void softmax_forward(float* y, const float* x, int64_t n, int64_t c) {
#pragma omp parallel for schedule(static) if (n * c > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float* xr = x + i * c;  // (C)
    float* yr = y + i * c;
    const float m = vec::max_of(xr, c);
    const float inv = 1.0f / vec::exp_shift_sum(yr, xr, c, m);
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) yr[j] *= inv;
  }
}

void softmax_backward(float* dx, const float* dy, const float* y, int64_t n, int64_t c) {
#pragma omp parallel for schedule(static) if (n * c > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float* g = dy + i * c;  // (C)
    const float* yr = y + i * c;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < c; ++j) dot += g[j] * yr[j];
    float* d = dx + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) d[j] = yr[j] * (g[j] - dot);
  }
}

}  // namespace lmf::cpu
