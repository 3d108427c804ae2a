// Sums: of every element, and over one dimension of x viewed as (OUTER, D, INNER). Full sums use
// fixed chunks accumulated in double so the result is identical for any thread count.
// Gradient: dx = factor * dout broadcast back over the reduced elements (factor 1/D for a mean).
#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace lmf::cpu {

double sum_all(const float* x, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    double s = 0.0;
    const int64_t end = std::min(n, (ch + 1) * kChunk);
    for (int64_t i = ch * kChunk; i < end; ++i) s += x[i];
    partial[ch] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

void sum_dim_forward(float* out, const float* x, int64_t outer, int64_t d, int64_t inner,
                     float factor) {
  if (outer == 1) {  // a column sum over all rows: split the rows instead
    column_sums(x, out, d, inner);
    for (int64_t j = 0; j < inner; ++j) out[j] *= factor;
    return;
  }
  // Parallel over the outer rows; the D loop walks contiguous INNER rows so it vectorises.
#pragma omp parallel for schedule(static) if (outer * d * inner > 32768 && outer > 1)
  for (int64_t o = 0; o < outer; ++o) {
    std::vector<double> acc(static_cast<std::size_t>(inner), 0.0);  // (INNER)
    const float* xo = x + o * d * inner;
    for (int64_t i = 0; i < d; ++i) {
      const float* row = xo + i * inner;
#pragma omp simd
      for (int64_t j = 0; j < inner; ++j) acc[j] += row[j];
    }
    float* orow = out + o * inner;
    for (int64_t j = 0; j < inner; ++j) orow[j] = static_cast<float>(acc[j]) * factor;
  }
}

void sum_dim_backward(float* dx, const float* dout, int64_t outer, int64_t d, int64_t inner,
                      float factor) {
  const int64_t rows = outer * d;
#pragma omp parallel for schedule(static) if (rows * inner > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = dout + (r / d) * inner;
    float* dst = dx + r * inner;
#pragma omp simd
    for (int64_t j = 0; j < inner; ++j) dst[j] = g[j] * factor;
  }
}

void fill(float* out, float value, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) out[i] = value;
}

}  // namespace lmf::cpu
