// RMS normalisation over the last dim (Hugging Face's LlamaRMSNorm): x (N, C) -> out (N, C) =
// x * rstd * w, rstd (N) = 1/sqrt(mean(x²) + eps) saved for the backward pass.
// Gradient (xhat = x * rstd, dnorm = dout * w):
//   dx = rstd * (dnorm - xhat * mean_c(dnorm * xhat))
//   dw = sum_n dout * xhat   (written here; the engine accumulates into .grad)
// The sum of squares runs in double over fixed 16-lane blocks like layer_norm.cpp (SIMD, and the
// same order whatever the row's address); dw is summed per fixed chunk of rows, then over chunks.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {

namespace {

// One row: out (C) = x * rstd * weight; returns rstd.
inline float rms_norm_row(float* orow, const float* xr, const float* weight, int64_t c, float eps) {
  using Wide = Eigen::Array<double, vec::kLanes, 1>;
  Wide acc = Wide::Zero();
  for (int64_t j = 0; j < c; j += vec::kLanes)
    acc += vec::load(xr + j, std::min(vec::kLanes, c - j), 0.f).cast<double>().square();
  double total = 0.0;
  for (int64_t l = 0; l < vec::kLanes; ++l) total += acc[l];  // in lane order
  const float r = 1.0f / std::sqrt(static_cast<float>(total / c) + eps);
  // HF multiplies the normalised row (rounded to f32) by the weight: the same two roundings.
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) orow[j] = weight[j] * (xr[j] * r);
  return r;
}

}  // namespace

void rms_norm_forward(float* out, float* rstd, const float* x, const float* weight, int64_t n, int64_t c,
                      float eps) {
#pragma omp parallel for schedule(static) if (n * c > 16384)
  for (int64_t i = 0; i < n; ++i) rstd[i] = rms_norm_row(out + i * c, x + i * c, weight, c, eps);
}

void add_rms_norm_forward(float* sum, float* out, float* rstd, const float* x, const float* y,
                          const float* weight, int64_t n, int64_t c, float eps) {
#pragma omp parallel for schedule(static) if (n * c > 16384)
  for (int64_t i = 0; i < n; ++i) {
    float* sr = sum + i * c;
    const float* xr = x + i * c;
    const float* yr = y + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) sr[j] = xr[j] + yr[j];
    rstd[i] = rms_norm_row(out + i * c, sr, weight, c, eps);  // sr is still in L1
  }
}

void rms_norm_backward(float* dx, float* dweight, const float* dout, const float* x, const float* weight,
                       const float* rstd, int64_t n, int64_t c) {
  constexpr int64_t kChunkRows = 32;
  const int64_t chunks = std::max<int64_t>(1, (n + kChunkRows - 1) / kChunkRows);
  float* partial = vec::thread_scratch<float>(0, dweight ? static_cast<std::size_t>(chunks * c) : 0);  // (chunks, C)
#pragma omp parallel for schedule(static) if (n * c > 16384)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    float* pdw = dweight ? partial + ch * c : nullptr;
    if (pdw) std::fill(pdw, pdw + c, 0.f);
    const int64_t r1 = std::min(n, (ch + 1) * kChunkRows);
    for (int64_t i = ch * kChunkRows; i < r1; ++i) {
      const float* g = dout + i * c;  // (C)
      const float* xr = x + i * c;
      const float r = rstd[i];
      if (dx) {
        float sum_dnorm_xhat = 0.f;
#pragma omp simd reduction(+ : sum_dnorm_xhat)
        for (int64_t j = 0; j < c; ++j) sum_dnorm_xhat += g[j] * weight[j] * (xr[j] * r);
        const float mean_dnorm_xhat = sum_dnorm_xhat / c;
        float* d = dx + i * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) d[j] = r * (g[j] * weight[j] - xr[j] * r * mean_dnorm_xhat);
      }
      if (pdw) {
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) pdw[j] += g[j] * (xr[j] * r);
      }
    }
  }
  if (!dweight) return;
#pragma omp parallel for schedule(static) if (chunks * c > 16384)
  for (int64_t j = 0; j < c; ++j) {
    double sw = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch) sw += partial[ch * c + j];
    dweight[j] = static_cast<float>(sw);
  }
}

}  // namespace lmf::cpu
