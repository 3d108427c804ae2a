// Shared by every kernel file: launch-grid helpers, bf16 conversion helpers and deterministic
// warp/block reductions; the check macros come from check.h (host code includes only that).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "common/check.h"
#include "kernels.h"

namespace lmf::kernels {

inline unsigned ceil_div(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

/// Launch limits: gridDim.x up to 2^31 - 1 blocks, gridDim.y and gridDim.z up to 65535. A launcher
/// whose grid grows with a user size (rows B·T, batch, B·NH) checks it first, so an oversized run
/// fails with one line naming the kernel and the size instead of "invalid configuration argument".
constexpr int64_t kMaxGridX = 2147483647, kMaxGridYZ = 65535;
inline void check_grid(const char* kernel, const char* what, int64_t blocks, int64_t limit) {
  if (blocks > limit)
    throw CudaError(std::string(kernel) + ": " + what + " needs " + std::to_string(blocks) +
                    " blocks in one grid dimension, over the launch limit of " + std::to_string(limit));
}

/// Raises `kernel`'s dynamic shared-memory limit to `bytes` on the current device, once per
/// (kernel, device): the attribute is per device, so a process that uses two GPUs must set it on
/// each. Above the device's opt-in maximum it throws naming the kernel instead of failing the launch.
template <class Kernel>
void opt_in_smem(Kernel kernel, std::size_t bytes, const char* name) {
  if (bytes <= 48 * 1024) return;
  int device = 0;
  LMF_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::set<std::pair<const void*, int>> done;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
  if (done.count(key)) return;
  int limit = 0;
  LMF_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (bytes > static_cast<std::size_t>(limit))
    throw CudaError(std::string(name) + ": needs " + std::to_string(bytes) + " bytes of shared memory per block, device " +
                    std::to_string(device) + " allows " + std::to_string(limit));
  LMF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  done.insert(key);
}

/// A 1-D grid of `threads`-wide blocks covering n elements with a grid-stride loop; capped so a
/// huge n never exceeds the grid limit (the loop covers the rest).
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

// --- device helpers ------------------------------------------------------------------------------
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
/// Round to nearest even, the same rounding as lmf::bf16 on the host.
__device__ __forceinline__ __nv_bfloat16 to_bf16(float x) { return __float2bfloat16_rn(x); }
/// The f32 value v as a T (f32 or bf16, round to nearest even): the store of a kernel templated on
/// its storage type, whose math stays f32 in registers. from_float<float> is the identity, so the f32
/// instantiation of such a kernel computes exactly what a float-only kernel did.
template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

/// Whether a storage operand of `kernel` is bf16; throws naming it when it is neither f32 nor bf16.
inline bool storage_is_bf16(ElemType type, const char* kernel, const char* operand) {
  if (type != ElemType::f32 && type != ElemType::bf16)
    throw CudaError(std::string(kernel) + ": " + operand + " must be f32 or bf16");
  return type == ElemType::bf16;
}

/// Calls f(T{}) with T the storage type named by a run-time flag (float or __nv_bfloat16), so a
/// launcher instantiates its kernel template once per storage type it accepts.
template <class F>
void with_storage(bool bf16, F&& f) {
  if (bf16) {
    f(__nv_bfloat16{});
  } else {
    f(float{});
  }
}
/// with_storage over two or three flags at once: f(TA{}, TB{}) or f(TA{}, TB{}, TC{}), one
/// instantiation per combination.
template <class F>
void with_storage(bool a, bool b, F&& f) {
  with_storage(a, [&](auto ta) { with_storage(b, [&](auto tb) { f(ta, tb); }); });
}
template <class F>
void with_storage(bool a, bool b, bool c, F&& f) {
  with_storage(a, b, [&](auto ta, auto tb) { with_storage(c, [&](auto tc) { f(ta, tb, tc); }); });
}

// Element i of an array whose element type (f32 or bf16) is a run-time flag; the flag is uniform
// over the grid, so the branch costs nothing. round_as(bf16, v) is v as such a store keeps it.
__device__ __forceinline__ float load_elem(const void* p, bool bf16, int64_t i) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void store_elem(void* p, bool bf16, int64_t i, float v) {
  if (bf16) {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}
__device__ __forceinline__ float round_as(bool bf16, float v) {
  return bf16 ? __bfloat162float(__float2bfloat16_rn(v)) : v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

/// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets the
/// result. `scratch` holds 32 floats of shared memory. The order of additions is fixed by the
/// thread layout, so results are deterministic run to run.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

}  // namespace lmf::kernels
