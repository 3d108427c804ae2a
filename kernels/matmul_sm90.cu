// The Hopper GEMM (sm_90a): c[b] (M, N) = a[b] (M, K) · b[b] (N, K)ᵀ with bf16 operands read by TMA
// and multiplied by wgmma.mma_async into f32 accumulators, the same contract and epilogues as the
// mma.sync kernel in matmul.cu (GemmParams, the GELU's pre-activation to aux included), but no padding needed: TMA zero-fills whatever lies
// outside the operands, so M, N, K are free and only the 16-byte rules of TMA remain (lda, ldb and
// batch strides multiples of 8 elements, operands 16-byte aligned; gemm_wgmma_supports).
//   Block: 3 warpgroups. Warpgroup 0 is the producer (one thread issues the TMA copies, the rest idle
//   with 40 registers); warpgroups 1 and 2 are consumers with 232 registers, each owning 128 rows of
//   the 256 x 128 tile as two m64n128k16 wgmma accumulators (128 f32 registers per thread).
//   Pipeline: kStages shared-memory stages of (256 + 128) x 64 bf16, each a "full" mbarrier (TMA
//   bytes landed) and an "empty" one (all consumer threads done reading), phases tracked by parity.
//   A consumer keeps one wgmma group in flight: it releases stage k-1 once the group of stage k is
//   issued and k-1's has retired.
//   Shared tiles use TMA's 128-byte swizzle (64 bf16 = one 128-byte row), the layout wgmma's
//   descriptors read without bank conflicts; each tile starts on a 1024-byte boundary.
// The kernel body exists only in the sm_90a compilation (__CUDA_ARCH_FEAT_SM90_ALL); other
// architectures get an empty stub that the host never launches (gemm_wgmma_available checks the
// device and that the build has 90a).
#include <cuda.h>
#include <cudaTypedefs.h>

#include <mutex>
#include <string>

#include "common/common.cuh"
#include "common/hopper.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kBM = 256, kBN = 128, kBK = 64;
constexpr int kStages = 4;
constexpr int kThreads = 384;                // producer warpgroup + 2 consumer warpgroups
constexpr int kABytes = kBM * kBK * 2;       // 32 KB
constexpr int kBBytes = kBN * kBK * 2;       // 16 KB
constexpr int kStageBytes = kABytes + kBBytes;
// Stages, 2 mbarriers per stage, and slack to align the dynamic buffer to 1024 bytes.
constexpr int kSmemBytes = kStages * kStageBytes + 2 * kStages * 8 + 1024;
static_assert(kBK * 2 == 128, "one K tile row is one 128-byte swizzle row");

// Device helpers of the kernel body, which exists only in the sm_90a pass (unused elsewhere).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
constexpr float kSqrt2OverPi = 0.7978845608028654f;
__device__ __forceinline__ float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

// Bias, the pre-activation to aux, GELU, residual, accumulate, then the store: the same
// arithmetic order as matmul.cu.
__device__ __forceinline__ float epilogue_value(const GemmParams& p, int64_t idx, int64_t col, float v) {
  if (p.bias) v += p.bias[col];
  if (p.aux_f32) p.aux_f32[idx] = v;
  if (p.aux_bf16) p.aux_bf16[idx] = __float2bfloat16_rn(v);
  if (p.gelu) v = gelu_tanh(v);
  if (p.residual) v += p.residual[idx];
  if (p.accumulate) v += p.c_f32 ? p.c_f32[idx] : __bfloat162float(p.c_bf16[idx]);
  return v;
}

// Columns col and col + 1 of one row (the pair an accumulator fragment holds).
__device__ __forceinline__ void store_pair(const GemmParams& p, int64_t batch, int64_t row, int64_t col, float v0,
                                           float v1, bool vec2) {
  if (row >= p.m || col >= p.n) return;
  const int64_t idx = batch * p.stride_c + row * p.ldc + col;
  v0 = epilogue_value(p, idx, col, v0);
  if (col + 1 < p.n) {
    v1 = epilogue_value(p, idx + 1, col + 1, v1);
    if (p.c_f32) {
      if (vec2) {
        *reinterpret_cast<float2*>(p.c_f32 + idx) = make_float2(v0, v1);
      } else {
        p.c_f32[idx] = v0;
        p.c_f32[idx + 1] = v1;
      }
    } else {
      if (vec2) {
        *reinterpret_cast<__nv_bfloat162*>(p.c_bf16 + idx) = __floats2bfloat162_rn(v0, v1);
      } else {
        p.c_bf16[idx] = __float2bfloat16_rn(v0);
        p.c_bf16[idx + 1] = __float2bfloat16_rn(v1);
      }
    }
  } else if (p.c_f32) {
    p.c_f32[idx] = v0;
  } else {
    p.c_bf16[idx] = __float2bfloat16_rn(v0);
  }
}
#endif

__global__ void __launch_bounds__(kThreads, 1)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                      const GemmParams p, int k_tiles, bool a_shared, bool b_shared, bool vec2) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  extern __shared__ unsigned char smem_raw[];
  // TMA's 128-byte swizzle and the descriptors' base offset 0 need 1024-byte aligned tiles.
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes);
  uint64_t* empty = full + kStages;
  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);                   // the producer's arrive.expect_tx
      mbar_init(&empty[s], 256);                // every consumer thread, after its reads retired
    }
    mbar_init_fence();
  }
  __syncthreads();
  const int batch = blockIdx.z;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;

  if (warpgroup == 0) {
    regs_decrease<40>();
    if (threadIdx.x == 0) {
      for (int kt = 0; kt < k_tiles; ++kt) {
        const int s = kt % kStages;
        const uint32_t round = kt / kStages;
        mbar_wait(&empty[s], (round & 1) ^ 1);  // round 0 passes: the fresh barrier's "previous" phase
        unsigned char* stage = smem + s * kStageBytes;
        mbar_arrive_expect_tx(&full[s], kStageBytes);  // out-of-bounds boxes still count full bytes
        tma_load_3d(stage, &map_a, &full[s], kt * kBK, m0, a_shared ? 0 : batch);
        tma_load_3d(stage + kABytes, &map_b, &full[s], kt * kBK, n0, b_shared ? 0 : batch);
      }
    }
  } else {
    regs_increase<232>();
    const int consumer = warpgroup - 1;  // rows [consumer * 128, + 128) of the tile
    float acc0[64], acc1[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc0[i] = acc1[i] = 0.f;
    for (int kt = 0; kt < k_tiles; ++kt) {
      const int s = kt % kStages;
      mbar_wait(&full[s], (kt / kStages) & 1);
      const unsigned char* a_tile = smem + s * kStageBytes + consumer * 128 * 128;
      const unsigned char* b_tile = smem + s * kStageBytes + kABytes;
      fence_registers(acc0);
      fence_registers(acc1);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kBK / 16; ++ks) {  // 16 bf16 of K = 32 bytes along the swizzled row
        const uint64_t desc_b = make_desc_k128b(b_tile + ks * 32);
        wgmma_m64n128k16_bf16(acc0, make_desc_k128b(a_tile + ks * 32), desc_b);
        wgmma_m64n128k16_bf16(acc1, make_desc_k128b(a_tile + 64 * 128 + ks * 32), desc_b);
      }
      wgmma_commit();
      fence_registers(acc0);
      fence_registers(acc1);
      wgmma_wait<1>();  // the group of stage kt-1 has retired: its shared memory may be refilled
      if (kt > 0) mbar_arrive(&empty[(kt - 1) % kStages]);
    }
    wgmma_wait<0>();
    fence_registers(acc0);
    fence_registers(acc1);

    // Accumulator layout of m64nNk16 (per warp of the warpgroup, 16 rows): register 4j + {0, 1} at
    // (lane / 4, 8j + 2 (lane % 4) + {0, 1}), 4j + {2, 3} eight rows below.
    const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32;
    const int64_t row0 = int64_t(m0) + consumer * 128 + warp * 16 + lane / 4;
    const int64_t col0 = int64_t(n0) + (lane % 4) * 2;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int64_t col = col0 + j * 8;
      store_pair(p, batch, row0, col, acc0[4 * j], acc0[4 * j + 1], vec2);
      store_pair(p, batch, row0 + 8, col, acc0[4 * j + 2], acc0[4 * j + 3], vec2);
      store_pair(p, batch, row0 + 64, col, acc1[4 * j], acc1[4 * j + 1], vec2);
      store_pair(p, batch, row0 + 72, col, acc1[4 * j + 2], acc1[4 * j + 3], vec2);
    }
  }
#endif
}

// --- host ------------------------------------------------------------------------------------------

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    LMF_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || f == nullptr)
      throw CudaError("gemm_wgmma: the driver has no cuTensorMapEncodeTiled (needs a CUDA 12+ driver)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A 3-D map (K, rows, batches) of a K-contiguous bf16 operand, boxes of 64 x box_rows with the
// 128-byte swizzle; a shared operand (stride 0) is one batch.
CUtensorMap make_map(const bf16_t* base, int64_t k, int64_t rows, int64_t ld, int64_t stride, int64_t batches,
                     int box_rows) {
  if (stride == 0 || batches <= 1) stride = ld * rows, batches = 1;
  CUtensorMap map;
  const cuuint64_t dims[3] = {cuuint64_t(k), cuuint64_t(rows), cuuint64_t(batches)};
  const cuuint64_t strides[2] = {cuuint64_t(ld) * 2, cuuint64_t(stride) * 2};  // bytes, dims 1 and 2
  const cuuint32_t box[3] = {cuuint32_t(kBK), cuuint32_t(box_rows), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult r = encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<bf16_t*>(base), dims, strides,
                                 box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw CudaError("gemm_wgmma: cuTensorMapEncodeTiled failed with CUresult " + std::to_string(int(r)) +
                    " (K " + std::to_string(k) + ", rows " + std::to_string(rows) + ", ld " + std::to_string(ld) + ")");
  return map;
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

}  // namespace

bool gemm_wgmma_available() {
#if defined(LMF_CUDA_SM90A)
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  LMF_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  LMF_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return major == 9 && minor == 0;
#else
  return false;
#endif
}

bool gemm_wgmma_supports(const GemmParams& p) {
  const int64_t limit = int64_t(1) << 31;  // TMA coordinates are 32-bit signed
  return aligned16(p.a) && aligned16(p.b) && p.lda % 8 == 0 && p.ldb % 8 == 0 && p.lda >= p.k &&
         p.ldb >= p.k && p.stride_a % 8 == 0 && p.stride_b % 8 == 0 && p.k >= 1 && p.m < limit && p.n < limit &&
         p.k < limit && (p.m + kBM - 1) / kBM <= kMaxGridYZ && p.batch <= kMaxGridYZ;
}

void gemm_wgmma(const GemmParams& p, cudaStream_t stream) {
  if (!gemm_wgmma_supports(p))
    throw CudaError("gemm_wgmma: operands must be 16-byte aligned with lda, ldb and batch strides multiples of 8");
  const bool a_shared = p.batch > 1 && p.stride_a == 0, b_shared = p.batch > 1 && p.stride_b == 0;
  const CUtensorMap map_a = make_map(p.a, p.k, p.m, p.lda, p.stride_a, p.batch, kBM);
  const CUtensorMap map_b = make_map(p.b, p.k, p.n, p.ldb, p.stride_b, p.batch, kBN);
  const void* c = p.c_f32 ? static_cast<const void*>(p.c_f32) : static_cast<const void*>(p.c_bf16);
  const int elem = p.c_f32 ? 4 : 2;
  const bool vec2 = p.ldc % 2 == 0 && (p.batch <= 1 || p.stride_c % 2 == 0) &&
                    reinterpret_cast<uintptr_t>(c) % (2 * elem) == 0;
  opt_in_smem(gemm_wgmma_kernel, kSmemBytes, "gemm_wgmma");
  const dim3 grid(ceil_div(p.n, kBN), ceil_div(p.m, kBM), static_cast<unsigned>(p.batch));
  const int k_tiles = static_cast<int>((p.k + kBK - 1) / kBK);
  gemm_wgmma_kernel<<<grid, kThreads, kSmemBytes, stream>>>(map_a, map_b, p, k_tiles, a_shared, b_shared, vec2);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
