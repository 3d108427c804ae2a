// Single-threaded f32 GEMM on AVX-512, the kernel under lmf::cpu::gemm on CPUs that have it (the
// caller falls back to Eigen elsewhere). Classic Goto/BLIS structure:
//   for each KC slice of K:  pack op(b)[slice, block] into NR-wide column panels (L2/L3)
//     for each MC block of rows: pack op(a)[rows, slice] into MR-high row panels (L2)
//       for each column panel, for each row panel: MR x NR micro-kernel, accumulators in registers
// The f32 micro-kernel is 8 x 48: 24 zmm accumulators, three zmm loads of b and eight broadcasts
// of a per k, so a k-step is 24 FMAs against 11 loads, and each accumulator's FMA chain has
// 24-way slack over the FMA latency (Zen 5 retires two 512-bit FMAs a cycle at latency 4, so at
// least 8 chains are needed). Narrow products (attention's n = 64) use 8 x 32 instead, as do the
// bf16 products. Packing absorbs every transpose and zero-pads ragged edges, so the kernel only
// ever sees whole panels; partial tiles are stored with lane masks.
// Each element of c is summed in the same order (KC slices in order, k within a slice in order)
// however the caller cuts c into blocks, so results do not depend on the thread count.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_kernel.h"

#define LMF_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
#define LMF_AVX512_BF16 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma,avx512bf16")))

namespace lmf::cpu {
namespace {

// f32 products: an 8 x 48 micro-tile (24 zmm accumulators) on blocks sized for Zen 5's 1 MiB L2.
// The packed a block (MC x KC = 192 KiB) stays in L2 while the b block (KC x NC = 3 MiB) streams
// from L3 one 96 KiB micro-panel at a time; KC 512 halves the passes over c against 256. Measured
// against the former 8 x 32 / 48 / 256 / 3072 (tuned on Zen 4, which splits 512-bit FMAs) in
// docs/benchmarks.md. NC is a multiple of both tile widths.
constexpr int64_t kMC = 96;
constexpr int64_t kKC = 512;
constexpr int64_t kNC = 1536;
// Products of at most this many rows read a (K, N) b in place (gemm_f32).
constexpr int64_t kInPlaceRows = 512;

// bf16 products keep the 8 x 32 tile and the blocking they were tuned with on Zen 4 (not yet
// re-measured on Zen 5; their panels hold k in pairs, so the f32 sizes above do not carry over).
constexpr int kMR = 8;     // rows of a micro-tile
constexpr int kNR = 32;    // columns of a micro-tile: two zmm
constexpr int64_t kBfKC = 256;  // K slice
constexpr int64_t kBfMC = 48;   // rows per packed a block
constexpr int64_t kBfNC = 3072; // columns per packed b block

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

// dst[c * dst_ld + r] = r[r][c]: eight rows in registers transposed with 24 shuffles, stored.
LMF_AVX512 inline void transpose_store_8x8(__m256 (&r)[8], float* dst, int64_t dst_ld) {
  __m256 t[8];
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * dst_ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * dst_ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// dst[c * dst_ld + r] = src[r * ld + c] for an 8 x 8 block: packing a k-contiguous operand goes
// through this, not scalar gathers.
LMF_AVX512 inline void transpose_8x8(const float* src, int64_t ld, float* dst, int64_t dst_ld) {
  __m256 r[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld);
  transpose_store_8x8(r, dst, dst_ld);
}

// A panel of width W (MR for a, NR for b) holds, for each k, W values side by side:
// panel[p * W + r] for p < kc, r < W, zero past `count`. An operand reaches it one of two ways.

// Lanes [h, h + 16) of a panel row that hold values, of `count`.
inline __mmask16 lanes_of(int64_t count, int h) {
  const int64_t n = count - h;
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1);
}

// The W values of each k are contiguous in memory (src[p * ld + r]): masked row copies.
template <int W>
LMF_AVX512 void pack_contiguous(float* panel, const float* src, int64_t ld, int64_t count, int64_t kc) {
  static_assert(W % 2 == 0 && W <= 64, "panel widths are even, up to 64");
  if constexpr (W == 8) {
    const __mmask8 m = count >= 8 ? 0xFF : static_cast<__mmask8>((1u << count) - 1);
    for (int64_t p = 0; p < kc; ++p) _mm256_storeu_ps(panel + p * W, _mm256_maskz_loadu_ps(m, src + p * ld));
  } else {
    for (int64_t p = 0; p < kc; ++p) {
#pragma GCC unroll 4
      for (int h = 0; h < W; h += 16) {
        const __mmask16 store = W - h >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (W - h)) - 1);
        _mm512_mask_storeu_ps(panel + p * W + h, store, _mm512_maskz_loadu_ps(lanes_of(count, h), src + p * ld + h));
      }
    }
  }
}

// Each of the W vectors is k-contiguous (src[r * ld + p]): 8 x 8 blocks transposed in registers
// (a last block overlapping the one before when the count is not a multiple of 8), the ragged rest
// one element at a time.
template <int W>
LMF_AVX512 void pack_transposed(float* panel, const float* src, int64_t ld, int64_t count, int64_t kc) {
  const int64_t kc8 = kc / 8 * 8;
  const bool blocks = count >= 8;
  if (blocks) {
    for (int64_t r = 0;; r += 8) {
      if (r + 8 > count) r = count - 8;
      // The next eight rows (the next group, or the next panel's first) are requested while these
      // are transposed: each row contributes only kc floats here, too short a run for the hardware
      // prefetcher to ramp up on its own. Those rows may lie past the operand's end, so their
      // addresses are integers (no out-of-range pointer is formed); a prefetch never faults.
      const uintptr_t next = reinterpret_cast<uintptr_t>(src + r * ld) + uintptr_t(8 * ld) * sizeof(float);
      for (int64_t p = 0; p < kc8; p += 8) {
        if (p % 16 == 0)
#pragma GCC unroll 8
          for (int i = 0; i < 8; ++i)
            _mm_prefetch(reinterpret_cast<const char*>(next + uintptr_t(i * ld + p) * sizeof(float)), _MM_HINT_T0);
        transpose_8x8(src + r * ld + p, ld, panel + p * W + r, W);
      }
      if (r + 8 >= count) break;
    }
  }
  for (int64_t r = 0; r < W; ++r) {
    float* dst = panel + r;
    if (r >= count) {
      for (int64_t p = 0; p < kc; ++p) dst[p * W] = 0.f;
      continue;
    }
    for (int64_t p = blocks ? kc8 : 0; p < kc; ++p) dst[p * W] = src[r * ld + p];
  }
}

// The same two ways from bf16 storage (mixed precision's activations and weight copies), widened
// exactly to f32 (a bf16 is the top half of an f32).
template <int W>
LMF_AVX512 void pack_contiguous_half(float* panel, const uint16_t* src, int64_t ld, int64_t count, int64_t kc) {
  static_assert(W % 2 == 0 && W <= 64, "panel widths are even, up to 64");
  for (int64_t p = 0; p < kc; ++p) {
#pragma GCC unroll 4
    for (int h = 0; h < W; h += 16) {
      const __mmask16 store = W - h >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (W - h)) - 1);
      const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes_of(count, h), src + p * ld + h));
      _mm512_mask_storeu_ps(panel + p * W + h, store, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
    }
  }
}

template <int W>
LMF_AVX512 void pack_transposed_half(float* panel, const uint16_t* src, int64_t ld, int64_t count, int64_t kc) {
  for (int64_t r = 0; r < W; ++r) {
    float* dst = panel + r;
    for (int64_t p = 0; p < kc; ++p) {
      const uint32_t bits = r < count ? static_cast<uint32_t>(src[r * ld + p]) << 16 : 0u;
      std::memcpy(dst + p * W, &bits, sizeof bits);
    }
  }
}

inline const uint16_t* half_at(const Operand& x, int64_t elements) {
  return reinterpret_cast<const uint16_t*>(x.data) + elements;
}

// op(a)[i0 + r, p0 + p] for r < MR (zero past `rows`), p < kc, into panel[p * MR + r].
template <int MR>
LMF_AVX512 void pack_a(float* panel, const Operand& a, int64_t i0, int64_t rows, int64_t p0, int64_t kc) {
  if (a.half) {
    if (a.trans) {
      pack_contiguous_half<MR>(panel, half_at(a, p0 * a.ld + i0), a.ld, rows, kc);
    } else {
      pack_transposed_half<MR>(panel, half_at(a, i0 * a.ld + p0), a.ld, rows, kc);
    }
    return;
  }
  if (a.trans) {  // stored (K, M)
    pack_contiguous<MR>(panel, a.data + p0 * a.ld + i0, a.ld, rows, kc);
  } else {        // stored (M, K)
    pack_transposed<MR>(panel, a.data + i0 * a.ld + p0, a.ld, rows, kc);
  }
}

// op(b)[p0 + p, j0 + j] for j < NR (zero past `cols`), p < kc, into panel[p * NR + j].
template <int NR>
LMF_AVX512 void pack_b(float* panel, const Operand& b, int64_t j0, int64_t cols, int64_t p0, int64_t kc) {
  if (b.half) {
    if (b.trans) {
      pack_transposed_half<NR>(panel, half_at(b, j0 * b.ld + p0), b.ld, cols, kc);
    } else {
      pack_contiguous_half<NR>(panel, half_at(b, p0 * b.ld + j0), b.ld, cols, kc);
    }
    return;
  }
  if (b.trans) {  // stored (N, K)
    pack_transposed<NR>(panel, b.data + j0 * b.ld + p0, b.ld, cols, kc);
  } else {        // stored (K, N)
    pack_contiguous<NR>(panel, b.data + p0 * b.ld + j0, b.ld, cols, kc);
  }
}

// c[0:rows, 0:cols] (+)= the accumulators of a micro-tile, lanes past `cols` masked off.
template <int MR, int NV>
LMF_AVX512 inline void store_tile(const __m512 (&acc)[MR][NV], float* c, int64_t ldc, int rows, int cols, bool add) {
  __mmask16 m[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) m[v] = lanes_of(cols, 16 * v);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    if (r < rows) {
      float* cr = c + r * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        __m512 x = acc[r][v];
        if (add) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m[v], cr + 16 * v));
        _mm512_mask_storeu_ps(cr + 16 * v, m[v], x);
      }
    }
  }
}

// c[0:rows, 0:cols] (+)= op(a) (MR x kc) . op(b) (kc x 16 NV): MR x NV accumulators.
// b's kc rows of 16 NV floats start ldb apart: a packed panel (ldb = 16 NV) or, in place, the rows
// of a (K, N) operand (ldb = its row stride). a's values come from one of two layouts:
//   ROWS false: the MR values of each k side by side, successive k a_step apart: a packed panel
//               (a_step = MR) or, in place, a (K, M) operand (a_step = its row stride);
//   ROWS true:  in place from an (M, K) operand, row r at pa + r * a_step, k contiguous.
// Every layout feeds the same FMAs in the same order, so the bits never depend on which one ran.
template <int MR, int NV, bool ROWS>
LMF_AVX512 void micro_kernel(int64_t kc, const float* pa, int64_t a_step, const float* pb, int64_t ldb, float* c,
                             int64_t ldc, int rows, int cols, bool add) {
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  if (add)  // c's rows start on their way to L1 while the k loop runs
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
      if (r < rows)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * v), _MM_HINT_T0);
  const float* row[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) row[r] = pa + r * a_step;
  for (int64_t p = 0; p < kc; ++p) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(pb + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(ROWS ? row[r][p] : pa[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, b[v], acc[r][v]);
    }
    if constexpr (!ROWS) pa += a_step;
    pb += ldb;
  }
  store_tile<MR, NV>(acc, c, ldc, rows, cols, add);
}

// --- bf16 products (AVX-512 BF16) -------------------------------------------------------------
// The same loops over panels of bf16 pairs: a 32-bit lane holds op(x)[.., 2q] in its low half and
// op(x)[.., 2q + 1] in its high half, so one VDPBF16PS does 32 multiply-adds (two k per lane)
// into f32 accumulators. Panels are packed in f32 as above, then rounded to nearest even.

// 32-bit lanes of x rounded to bf16 (round to nearest even), in the low 16 bits of each lane.
LMF_AVX512 inline __m512i bf16_bits(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  return _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
}

// Eight rows of 16 k-contiguous floats (row stride ld) straight into a pair panel: dst[q * dst_ld
// + r] = (src[r][2q], src[r][2q + 1]) for q, r < 8. VPMOVDW packs each row's sixteen bf16 into
// eight pairs, an 8 x 8 transpose puts them in panel order: no f32 panel in between.
LMF_AVX512 inline void pairs_8x16(const float* src, int64_t ld, uint32_t* dst, int64_t dst_ld) {
  __m256 r[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    r[i] = _mm256_castsi256_ps(_mm512_cvtepi32_epi16(bf16_bits(_mm512_loadu_ps(src + i * ld))));
  transpose_store_8x8(r, reinterpret_cast<float*>(dst), dst_ld);
}

// pairs_8x16 from bf16 storage: each 32-bit word of a k-contiguous row already is a pair
// (element 2q in its low half), so the panel is an 8 x 8 transpose of words, no rounding.
LMF_AVX512 inline void pairs_8x16_half(const uint16_t* src, int64_t ld, uint32_t* dst, int64_t dst_ld) {
  __m256 r[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i * ld)));
  transpose_store_8x8(r, reinterpret_cast<float*>(dst), dst_ld);
}

// An f32 panel of kc rows of `width` (8 or 32) into ceil(kc / 2) rows of bf16 pairs.
LMF_AVX512 void pair_panel(uint32_t* dst, const float* src, int64_t kc, int width) {
  const int64_t pairs = kc / 2;
  if (width == kNR) {
    for (int64_t q = 0; q < pairs; ++q)
      for (int h = 0; h < kNR; h += 16) {
        const __m512i lo = bf16_bits(_mm512_load_ps(src + 2 * q * kNR + h));
        const __m512i hi = bf16_bits(_mm512_load_ps(src + (2 * q + 1) * kNR + h));
        _mm512_store_si512(dst + q * kNR + h, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
      }
  } else {  // width 8: rows 2q and 2q + 1 are one zmm
    for (int64_t q = 0; q < pairs; ++q) {
      const __m512i both = bf16_bits(_mm512_loadu_ps(src + 2 * q * kMR));
      const __m256i lo = _mm512_castsi512_si256(both), hi = _mm512_extracti64x4_epi64(both, 1);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + q * kMR), _mm256_or_si256(lo, _mm256_slli_epi32(hi, 16)));
    }
  }
  if (kc % 2) {  // the odd last row pairs with zeros
    const float* last = src + (kc - 1) * width;
    uint32_t* out = dst + pairs * width;
    for (int j = 0; j < width; ++j) {
      uint32_t bits;
      std::memcpy(&bits, last + j, sizeof bits);
      out[j] = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    }
  }
}

// c[0:rows, 0:cols] (+)= a pair panel (kc2 x MR) . b pair panel (kc2 x NR).
LMF_AVX512_BF16 void micro_kernel_bf16(int64_t kc2, const uint32_t* pa, const uint32_t* pb, float* c,
                                       int64_t ldc, int rows, int cols, bool add) {
  __m512 acc[kMR][2];
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t q = 0; q < kc2; ++q) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(pb), b1 = (__m512bh)_mm512_load_si512(pb + 16);
#pragma GCC unroll 8
    for (int r = 0; r < kMR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(pa[r]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
    pa += kMR;
    pb += kNR;
  }
  store_tile<kMR, 2>(acc, c, ldc, rows, cols, add);
}

LMF_AVX512_BF16 void gemm_avx512_bf16(const Operand& a, const Operand& b, float* c, int64_t ldc,
                                      int64_t m, int64_t n, int64_t k, bool accumulate, float* g,
                                      int64_t ldg) {
  thread_local Scratch a_scratch, b_scratch, f32_scratch;
  const int64_t nc_max = std::min(kBfNC, (n + kNR - 1) / kNR * kNR);
  const int64_t kc2_max = (kBfKC + 1) / 2;
  auto* bp = reinterpret_cast<uint32_t*>(b_scratch.get(static_cast<std::size_t>(kc2_max * nc_max)));
  auto* ap = reinterpret_cast<uint32_t*>(a_scratch.get(static_cast<std::size_t>(kc2_max * kBfMC)));
  float* f32 = f32_scratch.get(static_cast<std::size_t>(kBfKC * kNR));  // one f32 panel at a time
  for (int64_t j0 = 0; j0 < n; j0 += kBfNC) {
    const int64_t nc = std::min(kBfNC, n - j0);
    for (int64_t p0 = 0; p0 < k; p0 += kBfKC) {
      const int64_t kc = std::min(kBfKC, k - p0), kc2 = (kc + 1) / 2;
      const bool add = accumulate || p0 > 0;
      const bool last = g && p0 + kBfKC >= k;  // the slice that finishes c: its blocks get the epilogue
      // k-contiguous operands (the weights of a forward pass, the activations) in whole panels go
      // straight into pairs; everything else through an f32 panel. Both round the same way.
      const bool direct = kc % 16 == 0;
      for (int64_t jr = 0; jr < nc; jr += kNR) {
        const int64_t cols = std::min<int64_t>(kNR, nc - jr);
        if (direct && b.trans && cols == kNR && b.half) {
          for (int j = 0; j < kNR; j += 8)
            for (int64_t p = 0; p < kc; p += 16)
              pairs_8x16_half(half_at(b, (j0 + jr + j) * b.ld + p0 + p), b.ld, bp + jr * kc2 + (p / 2) * kNR + j,
                              kNR);
        } else if (direct && b.trans && cols == kNR) {
          for (int j = 0; j < kNR; j += 8)
            for (int64_t p = 0; p < kc; p += 16)
              pairs_8x16(b.data + (j0 + jr + j) * b.ld + p0 + p, b.ld, bp + jr * kc2 + (p / 2) * kNR + j, kNR);
        } else {
          pack_b<kNR>(f32, b, j0 + jr, cols, p0, kc);
          pair_panel(bp + jr * kc2, f32, kc, kNR);
        }
      }
      for (int64_t i0 = 0; i0 < m; i0 += kBfMC) {
        const int64_t mc = std::min(kBfMC, m - i0);
        for (int64_t ir = 0; ir < mc; ir += kMR) {
          const int64_t rows = std::min<int64_t>(kMR, mc - ir);
          if (direct && !a.trans && rows == kMR && a.half) {
            for (int64_t p = 0; p < kc; p += 16)
              pairs_8x16_half(half_at(a, (i0 + ir) * a.ld + p0 + p), a.ld, ap + ir * kc2 + (p / 2) * kMR, kMR);
          } else if (direct && !a.trans && rows == kMR) {
            for (int64_t p = 0; p < kc; p += 16)
              pairs_8x16(a.data + (i0 + ir) * a.ld + p0 + p, a.ld, ap + ir * kc2 + (p / 2) * kMR, kMR);
          } else {
            pack_a<kMR>(f32, a, i0 + ir, rows, p0, kc);
            pair_panel(ap + ir * kc2, f32, kc, kMR);
          }
        }
        for (int64_t jr = 0; jr < nc; jr += kNR) {
          const int cols = static_cast<int>(std::min<int64_t>(kNR, nc - jr));
          for (int64_t ir = 0; ir < mc; ir += kMR) {
            const int rows = static_cast<int>(std::min<int64_t>(kMR, mc - ir));
            micro_kernel_bf16(kc2, ap + ir * kc2, bp + jr * kc2, c + (i0 + ir) * ldc + j0 + jr, ldc, rows, cols,
                              add);
          }
        }
        if (last)  // the finished (MC, NC) block is still in L2: its GELU now, whole rows at a time
          for (int64_t r = 0; r < mc; ++r) gelu_row(g + (i0 + r) * ldg + j0, c + (i0 + r) * ldc + j0, nc);
      }
    }
  }
}

// f32 operands are read in place wherever a micro-tile is whole: a in either layout (the kernel
// broadcasts a's values one at a time, so any stride serves), and b when it is stored (K, N), whose
// rows already hold each k's columns side by side, in products of at most kInPlaceRows rows. A
// packed b panel is contiguous and so immune to the cache-set conflicts of a strided one; that pays
// when many row tiles reuse it (2048^3 loses 8 % in place), not for the few rows of a training step
// (M = B*T against a weight, the backward's dx = dy . W), where the copy was pure overhead on every
// thread. The transposed b (the weights of a forward pass, stored (N, K)), bf16 storage and ragged
// edge tiles are always packed.
template <int MR, int NV>
LMF_AVX512 void gemm_f32(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n,
                         int64_t k, bool accumulate, float* g, int64_t ldg) {
  constexpr int NR = 16 * NV;
  thread_local Scratch a_scratch, b_scratch;
  const bool b_in_place = !b.half && !b.trans && m <= kInPlaceRows;
  const bool a_in_place = !a.half;
  const int64_t nc_max = (std::min(kNC, n) + NR - 1) / NR * NR;
  float* bp = b_scratch.get(static_cast<std::size_t>(kKC * (b_in_place ? NR : nc_max)));
  float* ap = a_scratch.get(static_cast<std::size_t>(kKC * (kMC + MR)));
  for (int64_t j0 = 0; j0 < n; j0 += kNC) {
    const int64_t nc = std::min(kNC, n - j0);
    for (int64_t p0 = 0; p0 < k; p0 += kKC) {
      const int64_t kc = std::min(kKC, k - p0);
      const bool add = accumulate || p0 > 0;
      const bool last = g && p0 + kKC >= k;  // the slice that finishes c: its blocks get the epilogue
      for (int64_t jr = 0; jr < nc; jr += NR) {
        const int64_t cols = std::min<int64_t>(NR, nc - jr);
        if (!b_in_place) {
          pack_b<NR>(bp + jr * kc, b, j0 + jr, cols, p0, kc);
        } else if (cols < NR) {  // the ragged last panel: zero-padded in scratch
          pack_b<NR>(bp, b, j0 + jr, cols, p0, kc);
        }
      }
      for (int64_t i0 = 0; i0 < m; i0 += kMC) {
        const int64_t mc = std::min(kMC, m - i0);
        for (int64_t ir = 0; ir < mc; ir += MR) {
          const int64_t rows = std::min<int64_t>(MR, mc - ir);
          if (!a_in_place || rows < MR) pack_a<MR>(ap + ir * kc, a, i0 + ir, rows, p0, kc);
        }
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int cols = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          const float* pb = bp + jr * kc;
          int64_t ldb = NR;
          if (b_in_place) {
            pb = cols == NR ? b.data + p0 * b.ld + j0 + jr : bp;
            ldb = cols == NR ? b.ld : NR;
          }
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int rows = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            float* ct = c + (i0 + ir) * ldc + j0 + jr;
            if (!a_in_place || rows < MR) {
              micro_kernel<MR, NV, false>(kc, ap + ir * kc, MR, pb, ldb, ct, ldc, rows, cols, add);
            } else if (a.trans) {  // stored (K, M)
              micro_kernel<MR, NV, false>(kc, a.data + p0 * a.ld + i0 + ir, a.ld, pb, ldb, ct, ldc, rows, cols, add);
            } else {               // stored (M, K)
              micro_kernel<MR, NV, true>(kc, a.data + (i0 + ir) * a.ld + p0, a.ld, pb, ldb, ct, ldc, rows, cols, add);
            }
          }
        }
        if (last)  // the finished (MC, NC) block is still in L2: its GELU now, whole rows at a time
          for (int64_t r = 0; r < mc; ++r) gelu_row(g + (i0 + r) * ldg + j0, c + (i0 + r) * ldc + j0, nc);
      }
    }
  }
}

// 8 x 48 where n fills 48-wide panels at least as well as 32-wide ones or is large; 8 x 32 for the
// narrow products of attention (n = T or HS = 64 would pad 8 x 48 panels by half).
LMF_AVX512 void gemm_avx512(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m,
                            int64_t n, int64_t k, bool accumulate, float* g, int64_t ldg) {
  const bool wide = n >= 512 || (n + 47) / 48 * 48 <= (n + 31) / 32 * 32;
  if (wide) {
    gemm_f32<8, 3>(a, b, c, ldc, m, n, k, accumulate, g, ldg);
  } else {
    gemm_f32<8, 2>(a, b, c, ldc, m, n, k, accumulate, g, ldg);
  }
}

}  // namespace

bool have_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("fma");
  return yes;
}

bool have_avx512_bf16() {
  static const bool yes = have_avx512() && __builtin_cpu_supports("avx512bf16");
  return yes;
}

bool gemm_kernel_enabled() {
  static const bool yes = have_avx512() && std::getenv("LMF_GEMM_EIGEN") == nullptr;
  return yes;
}

bool gemm_kernel(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n,
                 int64_t k, bool accumulate, bool bf16, float* gelu, int64_t ldg) {
  if (!gemm_kernel_enabled()) return false;
  if (m <= 0 || n <= 0) return true;
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i) {
      if (!accumulate) std::fill(c + i * ldc, c + i * ldc + n, 0.f);
      if (gelu) gelu_row(gelu + i * ldg, c + i * ldc, n);
    }
    return true;
  }
  if (bf16 && have_avx512_bf16()) {
    gemm_avx512_bf16(a, b, c, ldc, m, n, k, accumulate, gelu, ldg);
  } else {
    gemm_avx512(a, b, c, ldc, m, n, k, accumulate, gelu, ldg);
  }
  return true;
}

}  // namespace lmf::cpu
