// The AdamW update over a run of the parameter slab. It streams p, g, m and v once and is bound by
// memory bandwidth (GPT-2 124M: 3.5 GB a step), so on AVX-512 the body writes p, m and v with
// non-temporal stores: no read-for-ownership of lines that are overwritten whole, no eviction of
// the activations the next forward pass reads. Scalar head and tail use the very same operations
// (explicit fma, no reassociation), so where an element falls never changes its result.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_kernel.h"

namespace lmf::cpu {
namespace {

struct AdamConstants {
  float decay, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, bias_correction2_sqrt;
  float grad_scale;
  bool scaled;  // grad_scale != 1: multiply (a product by 1 is exact, but skipping it is free)
};

inline void adam_element(float& p, float g_stored, float& m, float& v, const AdamConstants& k) {
  const float g = k.scaled ? g_stored * k.grad_scale : g_stored;
  const float mi = std::fma(k.beta1, m, k.one_minus_beta1 * g);
  const float vi = std::fma(k.beta2, v, (k.one_minus_beta2 * g) * g);
  m = mi;
  v = vi;
  const float denom = std::sqrt(vi) / k.bias_correction2_sqrt + k.eps;
  p = std::fma(p, k.decay, -((k.step_size * mi) / denom));
}

void adam_scalar(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end,
                 const AdamConstants& k) {
  for (int64_t i = begin; i < end; ++i) adam_element(p[i], g[i], m[i], v[i], k);
}

__attribute__((target("avx512f,fma"))) void adam_avx512(float* p, const float* g, float* m, float* v,
                                                         int64_t begin, int64_t end,
                                                         const AdamConstants& k) {
  const auto misalignment = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 64; };
  int64_t i = begin;
  while (i < end && misalignment(p + i) != 0) adam_element(p[i], g[i], m[i], v[i], k), ++i;
  // Non-temporal stores need p, m and v all on 64-byte boundaries together (a ZeRO-1 shard can
  // offset the moments); otherwise the same loop with ordinary stores.
  const bool stream = misalignment(m + i) == 0 && misalignment(v + i) == 0;
  const __m512 decay = _mm512_set1_ps(k.decay), step_size = _mm512_set1_ps(k.step_size);
  const __m512 beta1 = _mm512_set1_ps(k.beta1), omb1 = _mm512_set1_ps(k.one_minus_beta1);
  const __m512 beta2 = _mm512_set1_ps(k.beta2), omb2 = _mm512_set1_ps(k.one_minus_beta2);
  const __m512 eps = _mm512_set1_ps(k.eps), bc2 = _mm512_set1_ps(k.bias_correction2_sqrt);
  const __m512 scale = _mm512_set1_ps(k.grad_scale);
  for (; i + 16 <= end; i += 16) {
    const __m512 gi = k.scaled ? _mm512_mul_ps(_mm512_loadu_ps(g + i), scale) : _mm512_loadu_ps(g + i);
    const __m512 mi = _mm512_fmadd_ps(beta1, _mm512_loadu_ps(m + i), _mm512_mul_ps(omb1, gi));
    const __m512 vi = _mm512_fmadd_ps(beta2, _mm512_loadu_ps(v + i), _mm512_mul_ps(_mm512_mul_ps(omb2, gi), gi));
    const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2), eps);
    const __m512 update = _mm512_div_ps(_mm512_mul_ps(step_size, mi), denom);
    const __m512 pi = _mm512_fmsub_ps(_mm512_load_ps(p + i), decay, update);
    if (stream) {
      _mm512_stream_ps(p + i, pi);
      _mm512_stream_ps(m + i, mi);
      _mm512_stream_ps(v + i, vi);
    } else {
      _mm512_store_ps(p + i, pi);
      _mm512_storeu_ps(m + i, mi);
      _mm512_storeu_ps(v + i, vi);
    }
  }
  adam_scalar(p, g, m, v, i, end, k);
  if (stream) _mm_sfence();  // streamed lines are visible before anyone reads them
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float decay_factor,
                  float lr, float beta1, float beta2, float eps, float bias_correction1,
                  float bias_correction2_sqrt, float grad_scale) {
  const AdamConstants k{decay_factor, lr / bias_correction1, beta1, 1.f - beta1, beta2, 1.f - beta2,
                        eps, bias_correction2_sqrt, grad_scale, grad_scale != 1.f};
  const bool wide = have_avx512();
#pragma omp parallel if (n > 65536)
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = ((n + threads - 1) / threads + 15) / 16 * 16;
    const int64_t begin = std::min(n, t * per), end = std::min(n, begin + per);
    if (wide) {
      adam_avx512(p, g, m, v, begin, end, k);
    } else {
      adam_scalar(p, g, m, v, begin, end, k);
    }
  }
}

}  // namespace lmf::cpu
