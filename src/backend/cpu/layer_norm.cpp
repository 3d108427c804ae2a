// Layer normalisation over the last dim: x (N, C) -> out (N, C) = (x - mean) * rstd * w + b,
// saving mean (N) and rstd (N) = 1/sqrt(var + eps) (biased variance) for the backward pass.
// Gradient (xhat = (x - mean) * rstd, dnorm = dout * w):
//   dx = rstd * (dnorm - mean_c(dnorm) - xhat * mean_c(dnorm * xhat))
//   dw = sum_n dout * xhat, db = sum_n dout  (written here; the engine accumulates into .grad)
// dw and db are summed per fixed chunk of rows and then over chunks in order: deterministic.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {

namespace {

// One row: out (C) = (x - mean) * rstd * weight + bias, returning mean and rstd.
inline void layer_norm_row(float* orow, float& mean, float& rstd, const float* xr, const float* weight,
                           const float* bias, int64_t c, float eps) {
  // Mean and variance accumulated in double over fixed 16-lane blocks (SIMD, and the same
  // order whatever the row's address), padding lanes contributing zero.
  using Wide = Eigen::Array<double, vec::kLanes, 1>;
  const auto total = [](const Wide& lanes) {  // in lane order
    double t = 0.0;
    for (int64_t l = 0; l < vec::kLanes; ++l) t += lanes[l];
    return t;
  };
  Wide acc = Wide::Zero();
  for (int64_t j = 0; j < c; j += vec::kLanes)
    acc += vec::load(xr + j, std::min(vec::kLanes, c - j), 0.f).cast<double>();
  const float m = static_cast<float>(total(acc) / c);
  acc.setZero();
  for (int64_t j = 0; j < c; j += vec::kLanes) {
    const int64_t lanes = std::min(vec::kLanes, c - j);
    acc += vec::keep_first(vec::load(xr + j, lanes, 0.f) - m, lanes).cast<double>().square();
  }
  const float r = 1.0f / std::sqrt(static_cast<float>(total(acc) / c) + eps);
  if (bias) {
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) orow[j] = (xr[j] - m) * r * weight[j] + bias[j];
  } else {
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) orow[j] = (xr[j] - m) * r * weight[j];
  }
  mean = m;
  rstd = r;
}

}  // namespace

void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                        const float* bias, int64_t n, int64_t c, float eps) {
#pragma omp parallel for schedule(static) if (n * c > 16384)
  for (int64_t i = 0; i < n; ++i)
    layer_norm_row(out + i * c, mean[i], rstd[i], x + i * c, weight, bias, c, eps);
}

void add_layer_norm_forward(float* sum, float* out, float* mean, float* rstd, const float* x,
                            const float* y, const float* weight, const float* bias, int64_t n,
                            int64_t c, float eps) {
#pragma omp parallel for schedule(static) if (n * c > 16384)
  for (int64_t i = 0; i < n; ++i) {
    float* sr = sum + i * c;
    const float* xr = x + i * c;
    const float* yr = y + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) sr[j] = xr[j] + yr[j];
    layer_norm_row(out + i * c, mean[i], rstd[i], sr, weight, bias, c, eps);  // sr is still in L1
  }
}

void layer_norm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                         const float* weight, const float* mean, const float* rstd, int64_t n,
                         int64_t c) {
  constexpr int64_t kChunkRows = 32;
  const int64_t chunks = std::max<int64_t>(1, (n + kChunkRows - 1) / kChunkRows);
  const bool params = dweight || dbias;
  float* partial = vec::thread_scratch<float>(0, params ? static_cast<std::size_t>(chunks * 2 * c) : 0);  // (chunks, 2, C)
#pragma omp parallel for schedule(static) if (n * c > 16384)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    float* pdw = params ? partial + ch * 2 * c : nullptr;
    float* pdb = params ? pdw + c : nullptr;
    if (params) std::fill(pdw, pdw + 2 * c, 0.f);
    const int64_t r1 = std::min(n, (ch + 1) * kChunkRows);
    for (int64_t i = ch * kChunkRows; i < r1; ++i) {
      const float* g = dout + i * c;  // (C)
      const float* xr = x + i * c;
      const float m = mean[i], r = rstd[i];
      float sum_dnorm = 0.f, sum_dnorm_xhat = 0.f;
#pragma omp simd reduction(+ : sum_dnorm, sum_dnorm_xhat)
      for (int64_t j = 0; j < c; ++j) {
        const float dnorm = g[j] * weight[j];
        sum_dnorm += dnorm;
        sum_dnorm_xhat += dnorm * (xr[j] - m) * r;
      }
      const float mean_dnorm = sum_dnorm / c, mean_dnorm_xhat = sum_dnorm_xhat / c;
      if (dx) {
        float* d = dx + i * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) {
          const float xhat = (xr[j] - m) * r;
          d[j] = r * (g[j] * weight[j] - mean_dnorm - xhat * mean_dnorm_xhat);
        }
      }
      if (params) {
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) {
          pdw[j] += g[j] * (xr[j] - m) * r;
          pdb[j] += g[j];
        }
      }
    }
  }
  if (!params) return;
#pragma omp parallel for schedule(static) if (chunks * c > 16384)
  for (int64_t j = 0; j < c; ++j) {
    double sw = 0.0, sb = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      sw += partial[ch * 2 * c + j];
      sb += partial[ch * 2 * c + c + j];
    }
    if (dweight) dweight[j] = static_cast<float>(sw);
    if (dbias) dbias[j] = static_cast<float>(sb);
  }
}

}  // namespace lmf::cpu
