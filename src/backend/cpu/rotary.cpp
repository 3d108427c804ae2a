// Rotary position embedding with Hugging Face's rotate_half pairing: within a head of HS dims,
// dim d (< HS/2) and dim d + HS/2 rotate together by the angle of (position, d):
//   out[d] = x[d] c - x[d + HS/2] s,  out[d + HS/2] = x[d + HS/2] c + x[d] s,
// c, s = cos, sin (L, HS/2) at row offset + t. The gradient is the inverse rotation (s -> -s), so
// one kernel serves both passes. x is read through strides (a transposed (B, T, NH, HS)
// projection needs no copy); out is always contiguous (B, NH, T, HS), as attention wants it.
#include "backend/cpu/cpu_kernels.h"

namespace lmf::cpu {

void rotary_apply(float* out, const float* x, const float* cos, const float* sin, int64_t b, int64_t nh,
                  int64_t t, int64_t hs, int64_t stride_b, int64_t stride_h, int64_t stride_t, int64_t offset,
                  float sin_sign) {
  const int64_t half = hs / 2;
#pragma omp parallel for collapse(2) schedule(static) if (b * nh * t * hs > 16384)
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t ti = 0; ti < t; ++ti) {
        const float* xr = x + bi * stride_b + h * stride_h + ti * stride_t;  // (HS)
        float* orow = out + ((bi * nh + h) * t + ti) * hs;                   // (HS)
        const float* c = cos + (offset + ti) * half;                         // (HS/2)
        const float* s = sin + (offset + ti) * half;
#pragma omp simd
        for (int64_t d = 0; d < half; ++d) {
          const float x1 = xr[d], x2 = xr[d + half], sd = sin_sign * s[d];
          orow[d] = x1 * c[d] - x2 * sd;
          orow[d + half] = x2 * c[d] + x1 * sd;
        }
      }
}

}  // namespace lmf::cpu
