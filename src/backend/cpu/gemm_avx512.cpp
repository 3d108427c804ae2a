// Single-threaded f32 GEMM on AVX-512, the kernel under lmf::cpu::gemm on CPUs that have it (the
// caller falls back to Eigen elsewhere). Classic Goto/BLIS structure:
//   for each KC slice of K:  pack op(b)[slice, block] into NR-wide column panels (L2/L3)
//     for each MC block of rows: pack op(a)[rows, slice] into MR-high row panels (L2)
//       for each column panel, for each row panel: MR x NR micro-kernel, accumulators in registers
// The micro-kernel is 8 x 32: 16 zmm accumulators, two zmm loads of b and eight broadcasts of a per
// k, so a k-step is 16 FMAs against 10 loads, and each accumulator's FMA chain has 16-way slack
// over the FMA latency. Packing absorbs every transpose and zero-pads ragged edges, so the kernel
// only ever sees whole panels; partial tiles are stored with lane masks.
// Each element of c is summed in the same order (KC slices in order, k within a slice in order)
// however the caller cuts c into blocks, so results do not depend on the thread count.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "backend/cpu/gemm_kernel.h"

#define LMF_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))

namespace lmf::cpu {
namespace {

constexpr int kMR = 8;     // rows of a micro-tile
constexpr int kNR = 32;    // columns of a micro-tile: two zmm
constexpr int64_t kKC = 256;  // K slice: a b micro-panel (KC x NR) is 32 KiB
constexpr int64_t kMC = 48;   // rows per packed a block (MC x KC = 48 KiB, in L2)
constexpr int64_t kNC = 3072; // columns per packed b block (KC x NC = 3 MiB)

// Thread-local, 64-byte aligned scratch that only grows.
struct Scratch {
  float* data = nullptr;
  std::size_t capacity = 0;
  ~Scratch() { std::free(data); }
  float* get(std::size_t n) {
    if (n > capacity) {
      std::free(data);
      capacity = (n + 15) / 16 * 16;
      data = static_cast<float*>(std::aligned_alloc(64, capacity * sizeof(float)));
      if (!data) throw std::bad_alloc();
    }
    return data;
  }
};

// op(a)[i0 + r, p0 + p] for r < MR (zero past `rows`), p < kc, into panel[p * MR + r].
LMF_AVX512 void pack_a(float* panel, const Operand& a, int64_t i0, int64_t rows, int64_t p0,
                       int64_t kc) {
  if (a.trans) {  // stored (K, M): the MR values of one k are contiguous
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = a.data + (p0 + p) * a.ld + i0;
      float* dst = panel + p * kMR;
      if (rows == kMR) {
        _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
      } else {
        for (int r = 0; r < kMR; ++r) dst[r] = r < rows ? src[r] : 0.f;
      }
    }
    return;
  }
  for (int r = 0; r < kMR; ++r) {  // stored (M, K): walk each row's k values
    float* dst = panel + r;
    if (r >= rows) {
      for (int64_t p = 0; p < kc; ++p) dst[p * kMR] = 0.f;
      continue;
    }
    const float* src = a.data + (i0 + r) * a.ld + p0;
    for (int64_t p = 0; p < kc; ++p) dst[p * kMR] = src[p];
  }
}

// op(b)[p0 + p, j0 + j] for j < NR (zero past `cols`), p < kc, into panel[p * NR + j].
LMF_AVX512 void pack_b(float* panel, const Operand& b, int64_t j0, int64_t cols, int64_t p0,
                       int64_t kc) {
  if (!b.trans) {  // stored (K, N): the NR values of one k are contiguous
    const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
    const __mmask16 m1 = cols >= 32 ? 0xFFFF : cols > 16 ? static_cast<__mmask16>((1u << (cols - 16)) - 1) : 0;
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = b.data + (p0 + p) * b.ld + j0;
      float* dst = panel + p * kNR;
      _mm512_store_ps(dst, _mm512_maskz_loadu_ps(m0, src));
      _mm512_store_ps(dst + 16, _mm512_maskz_loadu_ps(m1, src + 16));
    }
    return;
  }
  for (int j = 0; j < kNR; ++j) {  // stored (N, K): walk each column's k values
    float* dst = panel + j;
    if (j >= cols) {
      for (int64_t p = 0; p < kc; ++p) dst[p * kNR] = 0.f;
      continue;
    }
    const float* src = b.data + (j0 + j) * b.ld + p0;
    for (int64_t p = 0; p < kc; ++p) dst[p * kNR] = src[p];
  }
}

// c[0:rows, 0:cols] (+)= a panel (kc x MR) . b panel (kc x NR).
LMF_AVX512 void micro_kernel(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc,
                             int rows, int cols, bool add) {
  __m512 acc0[kMR], acc1[kMR];
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_load_ps(pb), b1 = _mm512_load_ps(pb + 16);
#pragma GCC unroll 8
    for (int r = 0; r < kMR; ++r) {
      const __m512 av = _mm512_set1_ps(pa[r]);
      acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
    }
    pa += kMR;
    pb += kNR;
  }
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? 0xFFFF : cols > 16 ? static_cast<__mmask16>((1u << (cols - 16)) - 1) : 0;
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r) {
    if (r < rows) {
      float* cr = c + r * ldc;
      __m512 v0 = acc0[r], v1 = acc1[r];
      if (add) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr + 16));
      }
      _mm512_mask_storeu_ps(cr, m0, v0);
      _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
  }
}

LMF_AVX512 void gemm_avx512(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m,
                            int64_t n, int64_t k, bool accumulate) {
  thread_local Scratch a_scratch, b_scratch;
  const int64_t nc_max = std::min(kNC, (n + kNR - 1) / kNR * kNR);
  float* bp = b_scratch.get(static_cast<std::size_t>(kKC * nc_max));
  float* ap = a_scratch.get(static_cast<std::size_t>(kKC * kMC));
  for (int64_t j0 = 0; j0 < n; j0 += kNC) {
    const int64_t nc = std::min(kNC, n - j0);
    for (int64_t p0 = 0; p0 < k; p0 += kKC) {
      const int64_t kc = std::min(kKC, k - p0);
      const bool add = accumulate || p0 > 0;
      for (int64_t jr = 0; jr < nc; jr += kNR)
        pack_b(bp + jr * kc, b, j0 + jr, std::min<int64_t>(kNR, nc - jr), p0, kc);
      for (int64_t i0 = 0; i0 < m; i0 += kMC) {
        const int64_t mc = std::min(kMC, m - i0);
        for (int64_t ir = 0; ir < mc; ir += kMR)
          pack_a(ap + ir * kc, a, i0 + ir, std::min<int64_t>(kMR, mc - ir), p0, kc);
        for (int64_t jr = 0; jr < nc; jr += kNR) {
          const int cols = static_cast<int>(std::min<int64_t>(kNR, nc - jr));
          for (int64_t ir = 0; ir < mc; ir += kMR) {
            const int rows = static_cast<int>(std::min<int64_t>(kMR, mc - ir));
            micro_kernel(kc, ap + ir * kc, bp + jr * kc, c + (i0 + ir) * ldc + j0 + jr, ldc, rows, cols, add);
          }
        }
      }
    }
  }
}

}  // namespace

bool have_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("fma");
  return yes;
}

bool gemm_kernel(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n,
                 int64_t k, bool accumulate) {
  static const bool eigen = std::getenv("LMF_GEMM_EIGEN") != nullptr;
  if (eigen || !have_avx512()) return false;
  if (m <= 0 || n <= 0) return true;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.f);
    return true;
  }
  gemm_avx512(a, b, c, ldc, m, n, k, accumulate);
  return true;
}

}  // namespace lmf::cpu
