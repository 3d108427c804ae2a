// Matrix products on tensor cores: c[b] (M, N) = a[b] (M, K) · b[b] (N, K)ᵀ, bf16 in, fp32 accumulate,
// fused bias / GELU epilogues, f32 or bf16 out, strided-batched. The GEMM has one layout ("NT": both
// operands K-contiguous); the host folds any other transpose, and f32 operands, into pack_bf16. A
// bf16 operand already K-contiguous (a weight (OUT, IN) as the "N x K" operand, a bf16 activation
// (N, IN) as "M x K") is read in place: the loads are predicated, so rows beyond M or N and
// columns beyond K arrive as zeros and nothing needs padding. The only layout rule left is the one
// of a 16-byte cp.async: rows start 16-byte aligned (ld a multiple of 8 bf16).
//   Kernel (sm_80+, also used on sm_90a): block tile 128 x 128 x 32, 8 warps as 2 x 4, warp tile
//   64 x 32 = 4 x 4 mma.sync.m16n8k16 tiles; operands staged with cp.async in two shared-memory
//   buffers (double buffering: tile k+1 streams in while tile k is multiplied) and read into
//   fragments with ldmatrix. Rows are padded to 40 bf16 (80 bytes) so the 8 row addresses of each
//   ldmatrix hit 8 distinct 16-byte bank groups (no conflicts, no swizzle needed).
//   On sm_90a MatmulBackend::wgmma runs the warpgroup/TMA kernel of matmul_sm90.cu instead.
// The epilogue adds the bias, and with GELU can also store the pre-activation (aux): a linear +
// GELU forward writes both of its outputs from the accumulators in one pass.
// The cuBLASLt path takes the same operands, so the two are measured on identical inputs.
#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

#include "common/common.cuh"
#include "common/mma.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = 32;
constexpr int kThreads = 256;
constexpr int kSmemStride = kBK + 8;  // bf16 per shared row: 80 bytes, conflict-free ldmatrix
static_assert(kBM == kGemmRowPad && kBN == kGemmRowPad && kBK == kGemmKPad, "a padded layout must stay valid");

constexpr float kSqrt2OverPi = 0.7978845608028654f;
__device__ __forceinline__ float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

// A 16-byte cp.async of which only the first `bytes` (0 to 16) come from global memory; the rest of
// the 16 shared bytes are zero-filled and, with bytes == 0, the source is not read.
__device__ __forceinline__ void cp_async_16_partial(void* smem, const void* gmem, int bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}

// One 128 x 32 tile of a K-contiguous operand into shared memory: 512 16-byte chunks, 2 per thread.
// `rows` rows of the tile exist (the rest of M or N), columns at and beyond k are zeros.
__device__ __forceinline__ void load_tile(__nv_bfloat16* smem, const __nv_bfloat16* gmem, int64_t ld,
                                          int64_t k0, int64_t rows, int64_t k) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int chunk = threadIdx.x + i * kThreads;
    const int row = chunk / 4, col = (chunk % 4) * 8;
    const int64_t kc = k0 + col;
    const int bytes = row < rows && kc < k ? 2 * static_cast<int>(k - kc < 8 ? k - kc : 8) : 0;
    cp_async_16_partial(smem + row * kSmemStride + col, bytes ? gmem + row * ld + kc : gmem, bytes);
  }
}

__device__ __forceinline__ void store_out(const GemmParams& p, int64_t batch, int64_t row, int64_t col,
                                          float v) {
  if (row >= p.m || col >= p.n) return;
  if (p.bias) v += p.bias[col];
  const int64_t idx = batch * p.stride_c + row * p.ldc + col;
  if (p.aux_f32) p.aux_f32[idx] = v;
  if (p.aux_bf16) p.aux_bf16[idx] = __float2bfloat16_rn(v);
  if (p.gelu) v = gelu_tanh(v);
  if (p.residual) v += p.residual[idx];
  if (p.c_f32) {
    p.c_f32[idx] = p.accumulate ? p.c_f32[idx] + v : v;
  } else {
    p.c_bf16[idx] = __float2bfloat16_rn(p.accumulate ? __bfloat162float(p.c_bf16[idx]) + v : v);
  }
}

__global__ void __launch_bounds__(kThreads) gemm_mma_kernel(const GemmParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  __shared__ alignas(16) __nv_bfloat16 smem_a[2][kBM * kSmemStride];
  __shared__ alignas(16) __nv_bfloat16 smem_b[2][kBN * kSmemStride];
  const int64_t batch = blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const __nv_bfloat16* a = p.a + batch * p.stride_a + m0 * p.lda;  // (128, K) rows of this tile
  const __nv_bfloat16* b = p.b + batch * p.stride_b + n0 * p.ldb;  // (128, K)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_m = warp / 4, warp_n = warp % 4;  // 2 x 4 warps, each 64 x 32 of the tile
  const int k_tiles = static_cast<int>((p.k + kBK - 1) / kBK);

  float acc[4][4][4] = {};  // (m16 tile, n8 tile, fragment)
  const int64_t rows_a = p.m - m0, rows_b = p.n - n0;  // > 0: the grid covers M and N exactly
  load_tile(smem_a[0], a, p.lda, 0, rows_a, p.k);
  load_tile(smem_b[0], b, p.ldb, 0, rows_b, p.k);
  cp_async_commit();
  for (int kt = 0; kt < k_tiles; ++kt) {
    const int stage = kt % 2;
    if (kt + 1 < k_tiles) {  // the other buffer was released by the barrier ending iteration kt-1
      load_tile(smem_a[stage ^ 1], a, p.lda, int64_t(kt + 1) * kBK, rows_a, p.k);
      load_tile(smem_b[stage ^ 1], b, p.ldb, int64_t(kt + 1) * kBK, rows_b, p.k);
    }
    cp_async_commit();   // possibly empty group, keeps the wait count uniform
    cp_async_wait<1>();  // everything but the newest group, i.e. tile kt, has landed
    __syncthreads();
    const __nv_bfloat16* sa = smem_a[stage];
    const __nv_bfloat16* sb = smem_b[stage];
#pragma unroll
    for (int ks = 0; ks < kBK; ks += 16) {
      unsigned af[4][4], bfrag[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        const int row = warp_m * 64 + mi * 16 + (lane % 16);
        ldmatrix_x4(af[mi], sa + row * kSmemStride + ks + (lane / 16) * 8);
      }
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        // Matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
        const int row = warp_n * 32 + nj * 16 + (lane % 8) + (lane / 16) * 8;
        unsigned r[4];
        ldmatrix_x4(r, sb + row * kSmemStride + ks + ((lane / 8) % 2) * 8);
        bfrag[2 * nj][0] = r[0];
        bfrag[2 * nj][1] = r[1];
        bfrag[2 * nj + 1][0] = r[2];
        bfrag[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_bf16_16816(acc[mi][ni], af[mi], bfrag[ni][0], bfrag[ni][1]);
    }
    __syncthreads();  // this stage may be overwritten by the next iteration's loads
  }
  // Accumulator fragment: d0, d1 at (lane/4, 2*(lane%4) + {0,1}); d2, d3 eight rows below.
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const int64_t row = m0 + warp_m * 64 + mi * 16 + lane / 4;
      const int64_t col = n0 + warp_n * 32 + ni * 8 + (lane % 4) * 2;
      store_out(p, batch, row, col, acc[mi][ni][0]);
      store_out(p, batch, row, col + 1, acc[mi][ni][1]);
      store_out(p, batch, row + 8, col, acc[mi][ni][2]);
      store_out(p, batch, row + 8, col + 1, acc[mi][ni][3]);
    }
#endif
}

// Bias, GELU (with the pre-activation to aux) and residual after a cuBLASLt product, in one pass
// over c. cuBLASLt's own epilogues (CUBLASLT_EPILOGUE_GELU_AUX_BIAS) are not used so that both
// backends apply exactly the same epilogue arithmetic (its GELU and its bf16 aux rounding may differ
// in the last bits); for a bf16 c this pass reads the product rounded to bf16, see gemm_cublas.
__global__ void epilogue_kernel(GemmParams p) {
  const int64_t total = p.batch * p.m * p.n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = i % p.n, row = (i / p.n) % p.m, batch = i / (p.n * p.m);
    const int64_t idx = batch * p.stride_c + row * p.ldc + col;
    float v = p.c_f32 ? p.c_f32[idx] : __bfloat162float(p.c_bf16[idx]);
    if (p.bias) v += p.bias[col];
    if (p.aux_f32) p.aux_f32[idx] = v;
    if (p.aux_bf16) p.aux_bf16[idx] = __float2bfloat16_rn(v);
    if (p.gelu) v = gelu_tanh(v);
    if (p.residual) v += p.residual[idx];
    if (p.c_f32) {
      p.c_f32[idx] = v;
    } else {
      p.c_bf16[idx] = __float2bfloat16_rn(v);
    }
  }
}

// 32 x 32 tiles through shared memory so both the strided read and the contiguous write are
// coalesced whichever of the source's dims is the unit-stride one.
template <class In>
__global__ void pack_kernel(__nv_bfloat16* out, const In* in, int64_t rows, int64_t cols, int64_t rows_pad,
                            int64_t cols_pad, int64_t sb, int64_t sr, int64_t sc) {
  __shared__ float tile[32][33];
  const int64_t batch = blockIdx.z;
  const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
  const In* src = in + batch * sb;
  const bool rows_contiguous = sc != 1 && sr == 1;
  for (int j = threadIdx.y; j < 32; j += 8) {
    // Along threadIdx.x walk the source's unit-stride dim.
    const int64_t r = rows_contiguous ? r0 + threadIdx.x : r0 + j;
    const int64_t c = rows_contiguous ? c0 + j : c0 + threadIdx.x;
    const float v = (r < rows && c < cols) ? to_float(src[r * sr + c * sc]) : 0.f;
    if (rows_contiguous) {
      tile[threadIdx.x][j] = v;
    } else {
      tile[j][threadIdx.x] = v;
    }
  }
  __syncthreads();
  for (int j = threadIdx.y; j < 32; j += 8) {
    const int64_t r = r0 + j, c = c0 + threadIdx.x;
    if (r < rows_pad && c < cols_pad) out[batch * rows_pad * cols_pad + r * cols_pad + c] = to_bf16(tile[j][threadIdx.x]);
  }
}

template <class In>
void pack(__nv_bfloat16* out, const In* in, int64_t batch, int64_t rows, int64_t cols, int64_t rows_pad,
          int64_t cols_pad, int64_t sb, int64_t sr, int64_t sc, cudaStream_t stream) {
  if (batch == 0 || rows_pad == 0 || cols_pad == 0) return;
  check_grid("pack_bf16", "rows / 32", ceil_div(rows_pad, 32), kMaxGridYZ);
  check_grid("pack_bf16", "batch", batch, kMaxGridYZ);
  const dim3 grid(ceil_div(cols_pad, 32), ceil_div(rows_pad, 32), static_cast<unsigned>(batch));
  pack_kernel<In><<<grid, dim3(32, 8), 0, stream>>>(out, in, rows, cols, rows_pad, cols_pad, sb, sr, sc);
  LMF_CUDA_LAUNCH_CHECK();
}

// --- cuBLASLt ------------------------------------------------------------------------------------

#define LMF_CUBLAS_CHECK(call)                                                                   \
  do {                                                                                           \
    const cublasStatus_t lmf_st_ = (call);                                                       \
    if (lmf_st_ != CUBLAS_STATUS_SUCCESS)                                                        \
      throw CudaError(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #call +    \
                      " failed with cublasStatus " + std::to_string(static_cast<int>(lmf_st_))); \
  } while (0)

constexpr std::size_t kCublasWorkspace = 32u << 20;

// Largest power of two (up to 256) dividing the address and the byte sizes of the row and batch steps.
uint32_t alignment_of(const void* ptr, int64_t ld, int64_t stride, int64_t elem_bytes) {
  uint64_t bits = reinterpret_cast<uintptr_t>(ptr) | static_cast<uint64_t>(ld * elem_bytes) |
                  static_cast<uint64_t>(stride * elem_bytes) | 256u;
  return static_cast<uint32_t>(bits & (~bits + 1));
}

// Everything the descriptors and the algorithm choice depend on; pointers enter only through
// their alignment, so one plan serves every step of a training run.
struct PlanKey {
  int64_t m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, batch;
  int out_f32;
  uint32_t align_a, align_b, align_c;
  auto tie() const {
    return std::tie(m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, batch, out_f32, align_a, align_b, align_c);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

// The descriptors and the chosen algorithm of one shape, built once (the first call with that
// shape) and kept for the process: a training step reaches no descriptor or heuristic call.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

// A handle, a workspace and a plan cache per GPU: a handle and its workspace belong to the device
// that was current when they were made, so a process driving two GPUs needs one of each per device.
struct CublasState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<PlanKey, Plan> plans;
};

std::mutex g_cublas_mutex;

CublasState& cublas_state(int device) {  // call with g_cublas_mutex held
  static std::map<int, CublasState> states;
  CublasState& state = states[device];
  if (state.handle == nullptr) {
    // Made once per device and kept, so a CUDA graph may record its address. If the first GEMM is
    // inside a capture, the capture's global mode would refuse cudaMalloc; the handle outlives
    // every graph, so relaxing the mode for these two calls is safe.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    LMF_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    LMF_CUBLAS_CHECK(cublasLtCreate(&state.handle));
    LMF_CUDA_CHECK(cudaMalloc(&state.workspace, kCublasWorkspace));
    LMF_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  }
  return state;
}

Plan make_plan(cublasLtHandle_t handle, const PlanKey& key) {
  // Row-major c (M, N) is column-major cᵀ (N, M) = b (N, K) · aᵀ: cuBLAS's A is our b stored as a
  // column-major (K, N) matrix used transposed, cuBLAS's B is our a as a column-major (K, M).
  Plan plan;
  LMF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
  LMF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans)));
  LMF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans, sizeof(no_trans)));
  const cudaDataType_t out_type = key.out_f32 ? CUDA_R_32F : CUDA_R_16BF;
  LMF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.la, CUDA_R_16BF, key.k, key.n, key.ldb));
  LMF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.lb, CUDA_R_16BF, key.k, key.m, key.lda));
  LMF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.lc, out_type, key.n, key.m, key.ldc));
  if (key.batch > 1) {
    const int32_t count = static_cast<int32_t>(key.batch);
    for (auto [layout, stride] : {std::pair{plan.la, key.stride_b}, std::pair{plan.lb, key.stride_a},
                                  std::pair{plan.lc, key.stride_c}}) {
      LMF_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
      LMF_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                        &stride, sizeof(stride)));
    }
  }
  cublasLtMatmulPreference_t pref = nullptr;
  LMF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  LMF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                        &kCublasWorkspace, sizeof(kCublasWorkspace)));
  // Determinism: no split-K reduction of any kind, so each output element is one dot product in
  // one fixed order. With the plan cached, the same shape runs the same algorithm at every step,
  // and results are bit-identical run to run on one GPU model (a GPU with another SM count may
  // pick another algorithm: reproducible per machine, not across machines).
  const uint32_t no_split_k = CUBLASLT_REDUCTION_SCHEME_NONE;
  LMF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                        &no_split_k, sizeof(no_split_k)));
  // The heuristic assumes 256-byte aligned matrices unless told otherwise; odd leading dimensions
  // or batch strides (an f32 output with N = 257) must lower that promise or kernels misalign.
  for (auto [attribute, value] : {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
                                  std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
                                  std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
                                  std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c}})
    LMF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof(value)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  LMF_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, plan.desc, plan.la, plan.lb, plan.lc, plan.lc, pref, 1,
                                                  &heuristic, &found));
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0)
    throw CudaError("cuBLASLt found no split-K-free algorithm for the matmul M=" + std::to_string(key.m) +
                    " N=" + std::to_string(key.n) + " K=" + std::to_string(key.k));
  plan.algo = heuristic.algo;
  return plan;
}

void gemm_cublas(const GemmParams& p, cudaStream_t stream) {
  int device = 0;
  LMF_CUDA_CHECK(cudaGetDevice(&device));
  const void* c_ptr = p.c_f32 ? static_cast<const void*>(p.c_f32) : static_cast<const void*>(p.c_bf16);
  const PlanKey key{p.m, p.n, p.k, p.lda, p.ldb, p.ldc,
                    p.batch > 1 ? p.stride_a : 0, p.batch > 1 ? p.stride_b : 0, p.batch > 1 ? p.stride_c : 0,
                    p.batch, p.c_f32 != nullptr,
                    alignment_of(p.b, p.ldb, p.stride_b, 2), alignment_of(p.a, p.lda, p.stride_a, 2),
                    alignment_of(c_ptr, p.ldc, p.stride_c, p.c_f32 ? 4 : 2)};
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  const Plan* plan = nullptr;
  {
    const std::lock_guard<std::mutex> lock(g_cublas_mutex);
    CublasState& st = cublas_state(device);
    auto it = st.plans.find(key);
    if (it == st.plans.end()) it = st.plans.emplace(key, make_plan(st.handle, key)).first;
    handle = st.handle, workspace = st.workspace, plan = &it->second;  // map nodes never move
  }
  const float alpha = 1.f, beta = p.accumulate ? 1.f : 0.f;
  void* c = p.c_f32 ? static_cast<void*>(p.c_f32) : static_cast<void*>(p.c_bf16);
  // The workspace is shared by every call on this device: safe while they share one stream (the
  // backend's), which orders them.
  LMF_CUBLAS_CHECK(cublasLtMatmul(handle, plan->desc, &alpha, p.b, plan->la, p.a, plan->lb, &beta, c, plan->lc,
                                  c, plan->lc, &plan->algo, workspace, kCublasWorkspace, stream));
  if (p.bias || p.gelu || p.residual) {
    epilogue_kernel<<<grid_for(p.batch * p.m * p.n, 256), 256, 0, stream>>>(p);
    LMF_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace

void gemm(const GemmParams& p, MatmulBackend backend, cudaStream_t stream) {
  if (p.m == 0 || p.n == 0 || p.batch == 0) return;
  if ((p.c_f32 == nullptr) == (p.c_bf16 == nullptr)) throw CudaError("gemm: exactly one output pointer");
  if (p.accumulate && (p.bias || p.gelu || p.residual || p.aux_f32 || p.aux_bf16))
    throw CudaError("gemm: accumulate cannot be fused with bias/gelu/residual/aux");
  if ((p.aux_f32 || p.aux_bf16) && !p.gelu) throw CudaError("gemm: aux (the pre-activation) needs gelu");
  if (p.k == 0) {  // an empty sum: bias/gelu of zero, or nothing to add
    if (!p.accumulate) {
      for (int64_t b = 0; b < p.batch; ++b)
        for (int64_t r = 0; r < p.m; ++r) {
          if (p.c_f32) {
            LMF_CUDA_CHECK(cudaMemsetAsync(p.c_f32 + b * p.stride_c + r * p.ldc, 0, sizeof(float) * p.n, stream));
          } else {
            LMF_CUDA_CHECK(cudaMemsetAsync(p.c_bf16 + b * p.stride_c + r * p.ldc, 0, 2 * p.n, stream));
          }
        }
      if (p.bias || p.gelu || p.residual) {
        epilogue_kernel<<<grid_for(p.batch * p.m * p.n, 256), 256, 0, stream>>>(p);
        LMF_CUDA_LAUNCH_CHECK();
      }
    }
    return;
  }
  if (backend == MatmulBackend::wgmma && gemm_wgmma_available() && gemm_wgmma_supports(p)) {
    gemm_wgmma(p, stream);
    return;
  }
  if (p.lda < p.k || p.ldb < p.k) throw CudaError("gemm: lda and ldb must be at least K");
  if (backend == MatmulBackend::cublas) {
    gemm_cublas(p, stream);
    return;
  }
  if (!gemm_custom_supports(p))
    throw CudaError("gemm: the mma.sync kernel needs a and b 16-byte aligned with lda, ldb and batch strides "
                    "multiples of 8 (pack the operand with pack_bf16)");
  check_grid("gemm", "M / 128 (rows, e.g. B*T)", ceil_div(p.m, kBM), kMaxGridYZ);
  check_grid("gemm", "batch", p.batch, kMaxGridYZ);
  const dim3 grid(ceil_div(p.n, kBN), ceil_div(p.m, kBM), static_cast<unsigned>(p.batch));
  gemm_mma_kernel<<<grid, kThreads, 0, stream>>>(p);
  LMF_CUDA_LAUNCH_CHECK();
}

bool gemm_custom_supports(const GemmParams& p) {
  const auto aligned16 = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; };
  return aligned16(p.a) && aligned16(p.b) && p.lda % 8 == 0 && p.ldb % 8 == 0 && p.stride_a % 8 == 0 &&
         p.stride_b % 8 == 0 && p.lda >= p.k && p.ldb >= p.k;
}

void pack_bf16(bf16_t* out, const float* in, int64_t batch, int64_t rows, int64_t cols, int64_t rows_pad,
               int64_t cols_pad, int64_t sb, int64_t sr, int64_t sc, cudaStream_t stream) {
  pack<float>(out, in, batch, rows, cols, rows_pad, cols_pad, sb, sr, sc, stream);
}

void pack_bf16_from_bf16(bf16_t* out, const bf16_t* in, int64_t batch, int64_t rows, int64_t cols,
                         int64_t rows_pad, int64_t cols_pad, int64_t sb, int64_t sr, int64_t sc,
                         cudaStream_t stream) {
  pack<__nv_bfloat16>(out, in, batch, rows, cols, rows_pad, cols_pad, sb, sr, sc, stream);
}

}  // namespace lmf::kernels
