// Causal flash attention (forward and backward) over (BH, T, HS) heads, f32 in and out, f32 math
// on CUDA cores. The forward also takes grouped-query heads (query head h of a batch reads
// key/value head h / (NH / NKV) in place) and queries that are the last Tq of Tk positions (query
// i sees keys [0, Tk - Tq + i]); the backward is still NH == NKV, Tq == Tk only. The T x T score matrix never exists in global memory: the forward streams
// 32-key tiles of K and V through shared memory and keeps a running max m, sum l and output o per
// query row (online softmax), saving lse = m + log(l) (BH, T); the backward recomputes
// P = exp(S - lse) tile by tile.
//   S = scale q kᵀ (causal, scale = 1/sqrt(HS)), P = softmax(S), out = P v
// Gradient (D = rowsum(dout * out)): dv = Pᵀ dout, dP = dout vᵀ, dS = P (dP - D),
//   dq = scale dS k, dk = scale dSᵀ q  (all written).
// The backward runs two kernels, one owning query tiles (dq) and one owning key tiles (dk, dv), so
// every output element has a single writer: no atomics, deterministic, at the price of computing
// P twice.
// Thread mapping: 4 warps x 8 rows each; for scores, lane = key (the other side's row is a shared-
// memory broadcast, rows padded by one float so 32 lanes reading 32 rows hit 32 banks); for the
// P·V-style products, lane = head dim. Shared operands are zero-padded to HS_MAX, so a head size
// below the kernel's HS_MAX (64 or 128) is exact, only slower. HS > 128 is rejected.
// This is the simple, verifiable design; a tensor-core (mma.sync / wgmma) version is future work.
#include <cmath>

#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kWarps = 4, kRowsPerWarp = 8, kTile = kWarps * kRowsPerWarp;  // 32 rows, 32 keys
constexpr int kThreads = kWarps * 32;

// rows x HS_MAX tile (stride `stride`) from src rows [row0, row0 + rows) of a (T, hs) matrix, zeros
// beyond T and beyond hs.
__device__ __forceinline__ void load_rows(float* dst, int stride, const float* src, int64_t row0,
                                          int64_t t, int hs, int hs_max) {
  for (int idx = threadIdx.x; idx < kTile * hs_max; idx += blockDim.x) {
    const int r = idx / hs_max, d = idx % hs_max;
    const int64_t row = row0 + r;
    dst[r * stride + d] = (row < t && d < hs) ? src[row * hs + d] : 0.f;
  }
}

template <int HS_MAX>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(float* out, float* lse, const float* q,
                                                                     const float* k, const float* v, int nh,
                                                                     int nkv, int64_t tq, int64_t tk, int hs,
                                                                     float scale) {
  constexpr int kD = HS_MAX / 32;  // head dims per lane
  extern __shared__ float smem[];
  float* qs = smem;                          // (32, HS_MAX)
  float* ks = qs + kTile * HS_MAX;           // (32, HS_MAX + 1)
  float* vs = ks + kTile * (HS_MAX + 1);     // (32, HS_MAX)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kTile;  // longest rows first
  const int64_t head = blockIdx.y, kv_head = (head / nh) * nkv + (head % nh) / (nh / nkv);
  const int64_t base = head * tq * hs, kv_base = kv_head * tk * hs, shift = tk - tq;
  load_rows(qs, HS_MAX, q + base, q0, tq, hs, HS_MAX);

  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][kD];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int dd = 0; dd < kD; ++dd) o[i][dd] = 0.f;
  }
  const int64_t last_key = shift + min(tq, q0 + kTile) - 1;  // query row r sees keys [0, shift + r]
  for (int64_t k0 = 0; k0 <= last_key; k0 += kTile) {
    __syncthreads();  // previous tiles fully consumed
    load_rows(ks, HS_MAX + 1, k + kv_base, k0, tk, hs, HS_MAX);
    load_rows(vs, HS_MAX, v + kv_base, k0, tk, hs, HS_MAX);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int r = warp * kRowsPerWarp + i;
      const int64_t row = q0 + r;
      if (row >= tq || shift + row < k0) continue;  // warp-uniform: padding row, or every key masked
      const int64_t key = k0 + lane, last = shift + row;
      float s = 0.f;
#pragma unroll 16
      for (int d = 0; d < HS_MAX; ++d) s += qs[r * HS_MAX + d] * ks[lane * (HS_MAX + 1) + d];
      s = key <= last ? s * scale : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(s));  // finite: key k0 <= last is visible
      const float p = key <= last ? expf(s - m_new) : 0.f;
      const float correction = expf(m[i] - m_new);
      l[i] = l[i] * correction + warp_sum(p);
      m[i] = m_new;
#pragma unroll
      for (int dd = 0; dd < kD; ++dd) o[i][dd] *= correction;
      for (int j = 0; j < 32; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int dd = 0; dd < kD; ++dd) o[i][dd] += pj * vs[j * HS_MAX + lane + 32 * dd];
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t row = q0 + warp * kRowsPerWarp + i;
    if (row >= tq) continue;
    const float inv = 1.0f / l[i];
#pragma unroll
    for (int dd = 0; dd < kD; ++dd) {
      const int d = lane + 32 * dd;
      if (d < hs) out[base + row * hs + d] = o[i][dd] * inv;
    }
    if (lane == 0) lse[head * tq + row] = m[i] + logf(l[i]);
  }
}

// D (BH*T) = rowsum(dout * out); one warp per row.
__global__ void attention_row_dot_kernel(float* dvec, const float* dout, const float* out, int64_t rows,
                                         int hs) {
  const int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  float s = 0.f;
  for (int d = threadIdx.x % 32; d < hs; d += 32) s += dout[row * hs + d] * out[row * hs + d];
  s = warp_sum(s);
  if (threadIdx.x % 32 == 0) dvec[row] = s;
}

// dq for one 32-row query tile: the forward's loop again, with dS in place of P.
template <int HS_MAX>
__global__ void __launch_bounds__(kThreads) attention_backward_dq_kernel(
    float* dq, const float* dout, const float* q, const float* k, const float* v, const float* lse,
    const float* dvec, int64_t t, int hs, float scale) {
  constexpr int kD = HS_MAX / 32;
  extern __shared__ float smem[];
  float* qs = smem;                           // (32, HS_MAX)
  float* gs = qs + kTile * HS_MAX;            // (32, HS_MAX) dout rows
  float* ks = gs + kTile * HS_MAX;            // (32, HS_MAX + 1)
  float* vs = ks + kTile * (HS_MAX + 1);      // (32, HS_MAX + 1)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kTile;
  const int64_t base = int64_t(blockIdx.y) * t * hs, row_base = int64_t(blockIdx.y) * t;
  load_rows(qs, HS_MAX, q + base, q0, t, hs, HS_MAX);
  load_rows(gs, HS_MAX, dout + base, q0, t, hs, HS_MAX);

  float acc[kRowsPerWarp][kD];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
    for (int dd = 0; dd < kD; ++dd) acc[i][dd] = 0.f;
  const int64_t last_row = min(t, q0 + kTile) - 1;
  for (int64_t k0 = 0; k0 <= last_row; k0 += kTile) {
    __syncthreads();
    load_rows(ks, HS_MAX + 1, k + base, k0, t, hs, HS_MAX);
    load_rows(vs, HS_MAX + 1, v + base, k0, t, hs, HS_MAX);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int r = warp * kRowsPerWarp + i;
      const int64_t row = q0 + r;
      if (row >= t || row < k0) continue;
      const int64_t key = k0 + lane;
      float s = 0.f, dp = 0.f;
#pragma unroll 16
      for (int d = 0; d < HS_MAX; ++d) {
        s += qs[r * HS_MAX + d] * ks[lane * (HS_MAX + 1) + d];
        dp += gs[r * HS_MAX + d] * vs[lane * (HS_MAX + 1) + d];
      }
      const float p = key <= row ? expf(s * scale - lse[row_base + row]) : 0.f;
      const float ds = p * (dp - dvec[row_base + row]);
      for (int j = 0; j < 32; ++j) {
        const float dsj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
        for (int dd = 0; dd < kD; ++dd) acc[i][dd] += dsj * ks[j * (HS_MAX + 1) + lane + 32 * dd];
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t row = q0 + warp * kRowsPerWarp + i;
    if (row >= t) continue;
#pragma unroll
    for (int dd = 0; dd < kD; ++dd) {
      const int d = lane + 32 * dd;
      if (d < hs) dq[base + row * hs + d] = acc[i][dd] * scale;
    }
  }
}

// dk, dv for one 32-key tile: walks the query tiles at and below the diagonal; lane = query row
// for P and dS, lane = head dim for the accumulation.
template <int HS_MAX>
__global__ void __launch_bounds__(kThreads) attention_backward_dkdv_kernel(
    float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
    const float* lse, const float* dvec, int64_t t, int hs, float scale) {
  constexpr int kD = HS_MAX / 32;
  extern __shared__ float smem[];
  float* ks = smem;                           // (32, HS_MAX)
  float* vs = ks + kTile * HS_MAX;            // (32, HS_MAX)
  float* qs = vs + kTile * HS_MAX;            // (32, HS_MAX + 1)
  float* gs = qs + kTile * (HS_MAX + 1);      // (32, HS_MAX + 1) dout rows
  float* lse_s = gs + kTile * (HS_MAX + 1);   // (32)
  float* dvec_s = lse_s + kTile;              // (32)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t k0 = int64_t(blockIdx.x) * kTile;
  const int64_t base = int64_t(blockIdx.y) * t * hs, row_base = int64_t(blockIdx.y) * t;
  load_rows(ks, HS_MAX, k + base, k0, t, hs, HS_MAX);
  load_rows(vs, HS_MAX, v + base, k0, t, hs, HS_MAX);

  float dk_acc[kRowsPerWarp][kD], dv_acc[kRowsPerWarp][kD];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
    for (int dd = 0; dd < kD; ++dd) dk_acc[i][dd] = dv_acc[i][dd] = 0.f;
  for (int64_t q0 = k0; q0 < t; q0 += kTile) {
    __syncthreads();
    load_rows(qs, HS_MAX + 1, q + base, q0, t, hs, HS_MAX);
    load_rows(gs, HS_MAX + 1, dout + base, q0, t, hs, HS_MAX);
    if (threadIdx.x < kTile) {
      const int64_t row = q0 + threadIdx.x;
      lse_s[threadIdx.x] = row < t ? lse[row_base + row] : 0.f;
      dvec_s[threadIdx.x] = row < t ? dvec[row_base + row] : 0.f;
    }
    __syncthreads();
    const int64_t row = q0 + lane;  // this lane's query row
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int c = warp * kRowsPerWarp + i;
      const int64_t key = k0 + c;
      if (key >= t) continue;  // warp-uniform
      float s = 0.f, dp = 0.f;
#pragma unroll 16
      for (int d = 0; d < HS_MAX; ++d) {
        s += qs[lane * (HS_MAX + 1) + d] * ks[c * HS_MAX + d];
        dp += gs[lane * (HS_MAX + 1) + d] * vs[c * HS_MAX + d];
      }
      const bool visible = row < t && key <= row;
      const float p = visible ? expf(s * scale - lse_s[lane]) : 0.f;
      const float ds = p * (dp - dvec_s[lane]);
      for (int j = 0; j < 32; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
        const float dsj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
        for (int dd = 0; dd < kD; ++dd) {
          dv_acc[i][dd] += pj * gs[j * (HS_MAX + 1) + lane + 32 * dd];
          dk_acc[i][dd] += dsj * qs[j * (HS_MAX + 1) + lane + 32 * dd];
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t key = k0 + warp * kRowsPerWarp + i;
    if (key >= t) continue;
#pragma unroll
    for (int dd = 0; dd < kD; ++dd) {
      const int d = lane + 32 * dd;
      if (d < hs) {
        dk[base + key * hs + d] = dk_acc[i][dd] * scale;
        dv[base + key * hs + d] = dv_acc[i][dd];
      }
    }
  }
}

template <int HS_MAX>
constexpr std::size_t forward_smem() {
  return sizeof(float) * kTile * (3 * HS_MAX + 1);
}
template <int HS_MAX>
constexpr std::size_t backward_smem() {
  return sizeof(float) * (kTile * (4 * HS_MAX + 2) + 2 * kTile);
}

// Kernels above 48 KB of shared memory must opt in once per kernel.
template <class Kernel>
void allow_smem(Kernel kernel, std::size_t bytes) {
  if (bytes > 48 * 1024) LMF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                             static_cast<int>(bytes)));
}

template <int HS_MAX>
void forward_launch(float* out, float* lse, const float* q, const float* k, const float* v, int64_t b,
                    int64_t nh, int64_t nkv, int64_t tq, int64_t tk, int hs, cudaStream_t stream) {
  static const bool ready = (allow_smem(attention_forward_kernel<HS_MAX>, forward_smem<HS_MAX>()), true);
  (void)ready;
  const dim3 grid(ceil_div(tq, kTile), static_cast<unsigned>(b * nh));
  attention_forward_kernel<HS_MAX><<<grid, kThreads, forward_smem<HS_MAX>(), stream>>>(
      out, lse, q, k, v, static_cast<int>(nh), static_cast<int>(nkv), tq, tk, hs,
      1.0f / std::sqrt(static_cast<float>(hs)));
  LMF_CUDA_LAUNCH_CHECK();
}

template <int HS_MAX>
void backward_launch(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                     const float* v, const float* lse, const float* dvec, int64_t bh, int64_t t, int hs,
                     cudaStream_t stream) {
  static const bool ready = (allow_smem(attention_backward_dq_kernel<HS_MAX>, backward_smem<HS_MAX>()),
                             allow_smem(attention_backward_dkdv_kernel<HS_MAX>, backward_smem<HS_MAX>()), true);
  (void)ready;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const dim3 grid(ceil_div(t, kTile), static_cast<unsigned>(bh));
  attention_backward_dq_kernel<HS_MAX><<<grid, kThreads, backward_smem<HS_MAX>(), stream>>>(
      dq, dout, q, k, v, lse, dvec, t, hs, scale);
  LMF_CUDA_LAUNCH_CHECK();
  attention_backward_dkdv_kernel<HS_MAX><<<grid, kThreads, backward_smem<HS_MAX>(), stream>>>(
      dk, dv, dout, q, k, v, lse, dvec, t, hs, scale);
  LMF_CUDA_LAUNCH_CHECK();
}

void check_head_size(int64_t hs) {
  if (hs < 1 || hs > 128)
    throw CudaError("attention: head size " + std::to_string(hs) + " is not supported on CUDA (1..128)");
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int64_t b,
                       int64_t nh, int64_t nkv, int64_t tq, int64_t tk, int64_t hs, cudaStream_t stream) {
  check_head_size(hs);
  if (nkv < 1 || nh % nkv != 0 || tq > tk)
    throw CudaError("attention: NKV " + std::to_string(nkv) + " must divide NH " + std::to_string(nh) +
                    " and Tq " + std::to_string(tq) + " must not exceed Tk " + std::to_string(tk));
  if (b * nh == 0 || tq == 0) return;
  if (hs <= 64) {
    forward_launch<64>(out, lse, q, k, v, b, nh, nkv, tq, tk, static_cast<int>(hs), stream);
  } else {
    forward_launch<128>(out, lse, q, k, v, b, nh, nkv, tq, tk, static_cast<int>(hs), stream);
  }
}

int64_t attention_backward_workspace(int64_t bh, int64_t t) { return bh * t; }

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* q,
                        const float* k, const float* v, const float* lse, int64_t bh, int64_t t, int64_t hs,
                        float* workspace, cudaStream_t stream) {
  check_head_size(hs);
  if (bh == 0 || t == 0) return;
  const int64_t rows = bh * t;
  attention_row_dot_kernel<<<ceil_div(rows, 8), 256, 0, stream>>>(workspace, dout, out, rows,
                                                                   static_cast<int>(hs));
  LMF_CUDA_LAUNCH_CHECK();
  if (hs <= 64) {
    backward_launch<64>(dq, dk, dv, dout, q, k, v, lse, workspace, bh, t, static_cast<int>(hs), stream);
  } else {
    backward_launch<128>(dq, dk, dv, dout, q, k, v, lse, workspace, bh, t, static_cast<int>(hs), stream);
  }
}

}  // namespace lmf::kernels
