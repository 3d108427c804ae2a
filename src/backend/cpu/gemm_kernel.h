// The hand-written GEMM under lmf::cpu::gemm (gemm_avx512.cpp). Row-major, single-threaded: the
// threading is gemm_batched's, which hands each thread a block of c.
#pragma once
#include <cstdint>

namespace lmf::cpu {

/// One operand of c = op(a) · op(b): `data` with leading dimension `ld` (elements between rows as
/// stored); trans means it is stored transposed, (K, M) for a or (N, K) for b.
/// `half`: data points at bf16 elements (their bits), which the packing widens exactly.
struct Operand {
  const float* data;
  int64_t ld;
  bool trans;
  bool half = false;
};

/// p advanced by `elements` of an operand stored as f32, or as bf16 when `half`.
inline const float* operand_at(const float* p, int64_t elements, bool half) {
  return reinterpret_cast<const float*>(reinterpret_cast<const char*>(p) + elements * (half ? 2 : 4));
}

/// Whether this CPU runs the AVX-512 kernel (AVX-512 F/VL/BW/DQ and FMA).
bool have_avx512();

/// Whether this CPU also has AVX-512 BF16 (VDPBF16PS).
bool have_avx512_bf16();
/// Whether gemm_kernel runs here: AVX-512, and LMF_GEMM_EIGEN not set in the environment. Only
/// gemm_kernel reads bf16 (`half`) operands; callers widen them where it does not run.
bool gemm_kernel_enabled();
/// c (M, N; leading dimension ldc) = op(a) (M, K) · op(b) (K, N), or += when accumulate. Returns
/// false, touching nothing, when the CPU lacks AVX-512 or LMF_GEMM_EIGEN is set in the
/// environment (the caller then uses Eigen). With bf16 (and AVX-512 BF16 here), operands are
/// rounded to bfloat16 (nearest even) as they are packed and the products summed in f32 by
/// VDPBF16PS; otherwise the product is f32. With gelu (leading dimension ldg), the GELU of each
/// finished block of c is also written there while the block is in cache (the epilogue of linear_gelu).
bool gemm_kernel(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n,
                 int64_t k, bool accumulate, bool bf16 = false, float* gelu = nullptr, int64_t ldg = 0);

/// gemm_kernel where it runs, otherwise Eigen on strided maps (gemm.cpp, always f32): the
/// single-threaded product every CPU kernel calls, with the same optional bf16 and GELU epilogue.
void gemm_serial(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n,
                 int64_t k, bool accumulate, bool bf16 = false, float* gelu = nullptr, int64_t ldg = 0);

}  // namespace lmf::cpu
