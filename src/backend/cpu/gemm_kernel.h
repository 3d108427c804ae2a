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
/// Whether gemm_kernel runs here: AVX-512, and LMF_GEMM_EIGEN not set in the environment.
bool gemm_kernel_enabled();
/// Products in bf16: operands rounded to bfloat16 (nearest even) as they are packed, products
/// summed in f32 by VDPBF16PS. Process-wide; stays off unless the kernel is enabled and the CPU
/// has AVX-512 BF16.
void set_gemm_bf16(bool on);
bool gemm_bf16();

/// c (M, N; leading dimension ldc) = op(a) (M, K) · op(b) (K, N), or += when accumulate. Returns
/// false, touching nothing, when the CPU lacks AVX-512 or LMF_GEMM_EIGEN is set in the
/// environment (the caller then uses Eigen). With allow_bf16 false the product stays f32 even
/// when set_gemm_bf16 is on. With gelu (leading dimension ldg), the GELU of each finished block of
/// c is also written there while the block is in cache (the epilogue of linear_gelu).
bool gemm_kernel(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n,
                 int64_t k, bool accumulate, bool allow_bf16 = true, float* gelu = nullptr,
                 int64_t ldg = 0);

/// gemm_kernel where it runs, otherwise Eigen on strided maps (gemm.cpp): the single-threaded
/// product every CPU kernel calls, with the same optional bf16 and GELU epilogue.
void gemm_serial(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n,
                 int64_t k, bool accumulate, bool allow_bf16 = true, float* gelu = nullptr,
                 int64_t ldg = 0);

}  // namespace lmf::cpu
