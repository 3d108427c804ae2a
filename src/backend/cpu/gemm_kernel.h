// The hand-written GEMM under lmf::cpu::gemm (gemm_avx512.cpp). Row-major, single-threaded: the
// threading is gemm_batched's, which hands each thread a block of c.
#pragma once
#include <cstdint>

namespace lmf::cpu {

/// One operand of c = op(a) · op(b): `data` with leading dimension `ld` (elements between rows as
/// stored); trans means it is stored transposed, (K, M) for a or (N, K) for b.
struct Operand {
  const float* data;
  int64_t ld;
  bool trans;
};

/// Whether this CPU runs the AVX-512 kernel (AVX-512 F/VL/BW/DQ and FMA).
bool have_avx512();

/// Whether this CPU also has AVX-512 BF16 (VDPBF16PS).
bool have_avx512_bf16();
/// Products in bf16: operands rounded to bfloat16 (nearest even) as they are packed, products
/// summed in f32 by VDPBF16PS. Process-wide; ignored (stays off) on a CPU without AVX-512 BF16.
void set_gemm_bf16(bool on);
bool gemm_bf16();

/// c (M, N; leading dimension ldc) = op(a) (M, K) · op(b) (K, N), or += when accumulate. Returns
/// false, touching nothing, when the CPU lacks AVX-512 or LMF_GEMM_EIGEN is set in the
/// environment (the caller then uses Eigen). With allow_bf16 false the product stays f32 even
/// when set_gemm_bf16 is on.
bool gemm_kernel(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n,
                 int64_t k, bool accumulate, bool allow_bf16 = true);

}  // namespace lmf::cpu
