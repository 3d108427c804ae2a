// Hopper (sm_90a) building blocks: mbarriers, TMA tensor copies (cp.async.bulk.tensor) and
// warpgroup MMA (wgmma.mma_async) with shared-memory matrix descriptors. Only for code compiled
// for sm_90a: include it inside `#if defined(__CUDA_ARCH_FEAT_SM90_ALL)` device code paths, and
// launch such kernels only after a host-side check of the device (kernels.h: gemm_wgmma_available).
#pragma once
#include <cuda.h>  // CUtensorMap (a type only; the driver is reached through the runtime's entry point)
#include <cuda_bf16.h>

#include <cstdint>

namespace lmf::kernels::sm90 {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// --- mbarrier --------------------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
/// Makes initialised barriers visible to the async proxy (TMA) before any copy signals them.
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/// One arrival that also announces `bytes` of TMA transactions the current phase must receive.
/// Returns the barrier state token (callers that only arrive ignore it).
__device__ __forceinline__ uint64_t mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  uint64_t state;
  asm volatile("mbarrier.arrive.expect_tx.shared.b64 %0, [%1], %2;\n"
               : "=l"(state)
               : "r"(smem_addr(bar)), "r"(bytes)
               : "memory");
  return state;
}
__device__ __forceinline__ uint64_t mbar_arrive(uint64_t* bar) {
  uint64_t state;
  asm volatile("mbarrier.arrive.shared.b64 %0, [%1];\n" : "=l"(state) : "r"(smem_addr(bar)) : "memory");
  return state;
}
/// Spins until the phase with parity `parity` has completed. A fresh barrier counts its phase
/// "before 0" (parity 1) as complete, which lets a producer pass its first round of waits.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = smem_addr(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}

// --- TMA ---------------------------------------------------------------------------------------------
/// A (c0, c1, c2) box of the tensor `map` into shared memory at `dst` (aligned as the map's swizzle
/// requires: 1024 bytes for 128B), completing `bytes` on `bar`. Elements outside the tensor are
/// written as zeros (and still count toward the transaction bytes).
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
      ::"r"(smem_addr(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
}

// --- wgmma -------------------------------------------------------------------------------------------
/// Descriptor of a K-major bf16 operand tile whose rows are 128 bytes (64 bf16) long, written by
/// TMA with the 128-byte swizzle: 8-row groups of 1024 bytes (the stride byte offset), the leading
/// byte offset unused for this layout (1 by convention), swizzle mode 1 (128B) in bits 62-63.
/// `smem` must lie in a 1024-byte aligned group (base offset 0); stepping K by 16 elements inside the
/// row is +32 bytes on the start address (the hardware applies the swizzle to the final address).
__device__ __forceinline__ uint64_t make_desc_k128b(const void* smem) {
  const uint64_t addr = smem_addr(smem);
  uint64_t desc = (addr & 0x3FFFF) >> 4;  // start address, 16-byte units, bits 0-13
  desc |= uint64_t(1) << 16;               // leading byte offset (unused with 128B swizzle)
  desc |= uint64_t(1024 >> 4) << 32;       // stride byte offset: one 8-row group
  desc |= uint64_t(1) << 62;               // 128-byte swizzle
  return desc;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
/// Waits until at most kPending of this warpgroup's committed wgmma groups are in flight.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
/// Keeps the compiler from moving reads or writes of the accumulators across an asynchronous
/// wgmma (it cannot see that the tensor cores own these registers until wgmma_wait).
template <int N>
__device__ __forceinline__ void fence_registers(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

/// Register reallocation between warpgroups (needs a register cap at kernel entry:
/// __launch_bounds__(threads, 1)).
template <int kRegs>
__device__ __forceinline__ void regs_decrease() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void regs_increase() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// d (64 x 128, f32, this warpgroup) += a (64 x 16) · b (128 x 16)ᵀ, both bf16 and K-major in
// 128B-swizzled shared memory described by desc_a, desc_b. Asynchronous: ordered by
// wgmma_fence / wgmma_commit / wgmma_wait.
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  // scale-d = 1: accumulate into d (the caller zeroes it first).
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(1));
}

}  // namespace lmf::kernels::sm90
