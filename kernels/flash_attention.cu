// Causal flash attention on tensor cores (FlashAttention-2 style), sm_80 and later: bf16 q, k, v,
// f32 accumulation, mma.sync.m16n8k16 fed by ldmatrix from shared memory, tiles streamed with
// cp.async in a kStages-deep ring, online softmax in the log2 domain.
//   Forward: one block per (query tile of 64 rows, head, batch); each of 4 warps owns 16 query rows
//   and keeps its Q fragments, its row max / row sum and its O accumulator in registers. S = Q·Kᵀ
//   stays in registers; its accumulator layout is exactly the A-operand layout of P·V, so P never
//   touches shared memory.
//   Backward: D = rowsum(dO ∘ O) first; then one block per (key tile of 64, K/V head, batch) walks
//   the query heads of its group and the query tiles at or below the diagonal, computing P and dS
//   once per tile: dV += Pᵀ·dO and dK += dSᵀ·Q in registers (written once, no atomics), and
//   dQ += dS·K through shared memory into an f32 sum with atomics, converted at the end.
// Rows beyond T are zero-filled by cp.async (src-size 0) and masked by causality, so T need not be a
// multiple of a tile. Shared rows are padded by 16 bytes: the 8 rows an ldmatrix reads hit 8
// distinct bank groups.
#include <cmath>
#include <string>

#include "common/common.cuh"
#include "common/mma.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

/// Tile shapes per head size.
template <int HS>
struct FlashConfig {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockQ = 16 * kWarps;           // forward: 16 query rows per warp
  static constexpr int kBlockK = 64;                    // keys per tile (forward and backward)
  static constexpr int kBwdBlockQ = HS <= 64 ? 64 : 32;  // backward query tile (registers at HS 128)
  static constexpr int kStages = 2;                     // cp.async ring depth
  static constexpr int kStride = HS + 8;                // bf16 per shared row (16 bytes of padding)
  static constexpr int kChunks = HS / 8;                // 16-byte chunks per row
  static_assert(HS % 16 == 0 && kBlockK == 16 * kWarps, "tile shapes");
};

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ldmatrix lane addressing (lane l, tile origin r0 rows, c0 columns):
//   A operand (16x16, rows = M): row r0 + (l & 7) + ((l >> 3) & 1) * 8, col c0 + (l >> 4) * 8
//   B operand from an (N rows, K contiguous) tile, two n8 tiles: row r0 + (l & 7) + (l >> 4) * 8,
//     col c0 + ((l >> 3) & 1) * 8  -> {b0, b1} of n-tile r0, {b0, b1} of n-tile r0 + 8
//   B operand from a (K rows, N contiguous) tile, .trans: row r0 + (l & 7) + ((l >> 3) & 1) * 8,
//     col c0 + (l >> 4) * 8       -> {b0, b1} of n-tile c0, {b0, b1} of n-tile c0 + 8
__device__ __forceinline__ const __nv_bfloat16* a_addr(const __nv_bfloat16* tile, int stride, int r0, int c0) {
  const int l = threadIdx.x % 32;
  return tile + (r0 + (l & 7) + ((l >> 3) & 1) * 8) * stride + c0 + (l >> 4) * 8;
}
__device__ __forceinline__ const __nv_bfloat16* b_addr(const __nv_bfloat16* tile, int stride, int r0, int c0) {
  const int l = threadIdx.x % 32;
  return tile + (r0 + (l & 7) + (l >> 4) * 8) * stride + c0 + ((l >> 3) & 1) * 8;
}
__device__ __forceinline__ const __nv_bfloat16* bt_addr(const __nv_bfloat16* tile, int stride, int r0, int c0) {
  const int l = threadIdx.x % 32;
  return tile + (r0 + (l & 7) + ((l >> 3) & 1) * 8) * stride + c0 + (l >> 4) * 8;
}

// `rows` rows of HS bf16 starting at sequence row `row0` into a padded shared tile; rows at or
// beyond `seq` are zero-filled.
template <int HS>
__device__ __forceinline__ void load_rows(__nv_bfloat16* smem, const __nv_bfloat16* base, int64_t row_stride,
                                          int row0, int rows, int seq) {
  using Cfg = FlashConfig<HS>;
  for (int c = threadIdx.x; c < rows * Cfg::kChunks; c += Cfg::kThreads) {
    const int r = c / Cfg::kChunks, col = (c % Cfg::kChunks) * 8;
    const bool valid = row0 + r < seq;
    const __nv_bfloat16* src = base + (valid ? int64_t(row0 + r) * row_stride : 0) + col;
    cp_async_16(smem + r * Cfg::kStride + col, src, valid);
  }
}

// ------------------------------------------------------------------------------------------------
// Forward.
template <int HS>
__global__ void __launch_bounds__(FlashConfig<HS>::kThreads)
    flash_forward_kernel(const FlashAttentionParams p) {
  using Cfg = FlashConfig<HS>;
  constexpr int BQ = Cfg::kBlockQ, BK = Cfg::kBlockK, S = Cfg::kStride, KS = HS / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sk = sq + BQ * S;                   // kStages tiles of BK x S
  __nv_bfloat16* sv = sk + Cfg::kStages * BK * S;    // kStages tiles of BK x S

  const int q_tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (p.heads / p.kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int q0 = q_tile * BQ;
  const __nv_bfloat16* qb = p.q + b * p.q_batch_stride + h * p.q_head_stride;
  const __nv_bfloat16* kb = p.k + b * p.k_batch_stride + hk * p.k_head_stride;
  const __nv_bfloat16* vb = p.v + b * p.v_batch_stride + hk * p.v_head_stride;

  const int last_key = min(q0 + BQ, p.seq) - 1;  // causal: no key beyond the tile's last query
  const int n_tiles = last_key / BK + 1;

  load_rows<HS>(sq, qb, p.q_row_stride, q0, BQ, p.seq);
  load_rows<HS>(sk, kb, p.k_row_stride, 0, BK, p.seq);
  load_rows<HS>(sv, vb, p.v_row_stride, 0, BK, p.seq);
  cp_async_commit();

  unsigned qf[KS][4];
  float o[HS / 8][4];
#pragma unroll
  for (int i = 0; i < HS / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
  const float scale_log2 = p.scale * kLog2e;
  const int row_a = q0 + warp * 16 + lane / 4, row_b = row_a + 8;  // this thread's two query rows

  for (int j = 0; j < n_tiles; ++j) {
    const int stage = j % Cfg::kStages;
    if (j + 1 < n_tiles) {  // prefetch the next K/V tile into the other stage
      const int next = (j + 1) % Cfg::kStages;
      load_rows<HS>(sk + next * BK * S, kb, p.k_row_stride, (j + 1) * BK, BK, p.seq);
      load_rows<HS>(sv + next * BK * S, vb, p.v_row_stride, (j + 1) * BK, BK, p.seq);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) ldmatrix_x4(qf[ks], a_addr(sq, S, warp * 16, ks * 16));
    }
    const __nv_bfloat16* tk = sk + stage * BK * S;
    const __nv_bfloat16* tv = sv + stage * BK * S;

    // S (16 x BK) = Q_w · K_jᵀ.
    float s[BK / 8][4];
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
      for (int n = 0; n < BK / 8; n += 2) {
        unsigned kf[4];
        ldmatrix_x4(kf, b_addr(tk, S, n * 8, ks * 16));
        mma_bf16_16816(s[n], qf[ks], kf[0], kf[1]);
        mma_bf16_16816(s[n + 1], qf[ks], kf[2], kf[3]);
      }
    }
    // Scale to the log2 domain, mask the future, update the running max and sum.
    const int key0 = j * BK + (lane % 4) * 2;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + n * 8 + (e & 1), row = e < 2 ? row_a : row_b;
        s[n][e] = key <= row ? s[n][e] * scale_log2 : -INFINITY;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[n][e]);
      }
    }
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float new_max = fmaxf(row_max[r], tile_max[r]);
      correction[r] = new_max == -INFINITY ? 1.f : exp2f(row_max[r] - new_max);
      row_max[r] = new_max;
      row_sum[r] *= correction[r];
    }
#pragma unroll
    for (int i = 0; i < HS / 8; ++i) {
      o[i][0] *= correction[0], o[i][1] *= correction[0];
      o[i][2] *= correction[1], o[i][3] *= correction[1];
    }
    // P = exp2(S - max), rounded to bf16 as the A operand of P·V; the sum uses the rounded values
    // so numerator and denominator see the same P.
    unsigned pf[BK / 16][4];
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) {
      float e4[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float m = row_max[e >> 1];
        e4[e] = m == -INFINITY ? 0.f : exp2f(s[n][e] - m);
      }
      const unsigned lo = pack_bf16x2(e4[0], e4[1]), hi = pack_bf16x2(e4[2], e4[3]);
      const __nv_bfloat162 lo2 = *reinterpret_cast<const __nv_bfloat162*>(&lo);
      const __nv_bfloat162 hi2 = *reinterpret_cast<const __nv_bfloat162*>(&hi);
      row_sum[0] += __low2float(lo2) + __high2float(lo2);
      row_sum[1] += __low2float(hi2) + __high2float(hi2);
      pf[n / 2][(n % 2) * 2 + 0] = lo;
      pf[n / 2][(n % 2) * 2 + 1] = hi;
    }
    // O (16 x HS) += P (16 x BK) · V_j (BK x HS).
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
#pragma unroll
      for (int n = 0; n < HS / 8; n += 2) {
        unsigned vf[4];
        ldmatrix_x4_trans(vf, bt_addr(tv, S, kk * 16, n * 8));
        mma_bf16_16816(o[n], pf[kk], vf[0], vf[1]);
        mma_bf16_16816(o[n + 1], pf[kk], vf[2], vf[3]);
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }

  // Normalise, store O (bf16) and the natural-log lse.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
  }
  const float inv[2] = {1.f / row_sum[0], 1.f / row_sum[1]};
  __nv_bfloat16* ob = p.o + b * p.o_batch_stride + h * p.o_head_stride;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r == 0 ? row_a : row_b;
    if (row >= p.seq) continue;
    __nv_bfloat16* orow = ob + int64_t(row) * p.o_row_stride;
#pragma unroll
    for (int n = 0; n < HS / 8; ++n) {
      const int col = n * 8 + (lane % 4) * 2;
      *reinterpret_cast<__nv_bfloat162*>(orow + col) =
          __floats2bfloat162_rn(o[n][2 * r] * inv[r], o[n][2 * r + 1] * inv[r]);
    }
    if (lane % 4 == 0) p.lse[(int64_t(b) * p.heads + h) * p.seq + row] = (row_max[r] + log2f(row_sum[r])) * kLn2;
  }
}

// ------------------------------------------------------------------------------------------------
// Backward, step 1: D (B, NH, T) = rowsum(dO ∘ O) in f32, one warp per row; also zeroes the dq sum.
__global__ void flash_backward_dot_kernel(const FlashAttentionBackwardParams p, float* dsum) {
  const FlashAttentionParams& f = p.fwd;
  const int64_t rows = int64_t(f.batch) * f.heads * f.seq;
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int t = int(row % f.seq), h = int((row / f.seq) % f.heads), b = int(row / (int64_t(f.seq) * f.heads));
  const __nv_bfloat16* o = f.o + b * f.o_batch_stride + h * f.o_head_stride + t * f.o_row_stride;
  const __nv_bfloat16* d = p.dout + b * p.do_batch_stride + h * p.do_head_stride + t * p.do_row_stride;
  float acc = 0.f;
  for (int c = lane * 2; c < f.head_dim; c += 64) {
    const float2 of = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(o + c));
    const float2 df = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(d + c));
    acc += of.x * df.x + of.y * df.y;
  }
  acc = warp_sum(acc);
  if (lane == 0) dsum[row] = acc;
}

// Step 2: dK, dV per key tile, dQ into the f32 sum.
template <int HS>
__global__ void __launch_bounds__(FlashConfig<HS>::kThreads)
    flash_backward_kernel(const FlashAttentionBackwardParams p, const float* dsum, float* dq_sum) {
  using Cfg = FlashConfig<HS>;
  constexpr int BQ = Cfg::kBwdBlockQ, BK = Cfg::kBlockK, S = Cfg::kStride, KS = HS / 16;
  constexpr int DS = BK + 8;  // dS row stride (bf16)
  const FlashAttentionParams& f = p.fwd;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sk = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // BK x S
  __nv_bfloat16* sv = sk + BK * S;                                 // BK x S
  __nv_bfloat16* sq = sv + BK * S;                                 // kStages x BQ x S
  __nv_bfloat16* sdo = sq + Cfg::kStages * BQ * S;                 // kStages x BQ x S
  __nv_bfloat16* sds = sdo + Cfg::kStages * BQ * S;                // BQ x DS
  float* slse = reinterpret_cast<float*>(sds + BQ * DS);           // kStages x BQ (log2 domain)
  float* sd = slse + Cfg::kStages * BQ;                            // kStages x BQ

  const int k_tile = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int group = f.heads / f.kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int k0 = k_tile * BK;
  const float scale_log2 = f.scale * kLog2e;

  load_rows<HS>(sk, f.k + b * f.k_batch_stride + hk * f.k_head_stride, f.k_row_stride, k0, BK, f.seq);
  load_rows<HS>(sv, f.v + b * f.v_batch_stride + hk * f.v_head_stride, f.v_row_stride, k0, BK, f.seq);
  cp_async_commit();

  float dk[HS / 8][4], dv[HS / 8][4];
#pragma unroll
  for (int i = 0; i < HS / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;

  // The work list: (query head, query tile) for every head of the group, tiles from the diagonal on.
  const int first_tile = k0 / BQ, q_tiles = (f.seq + BQ - 1) / BQ;
  const int per_head = q_tiles - first_tile, items = group * per_head;
  auto load_item = [&](int item, int stage) {
    const int h = hk * group + item / per_head, q0 = (first_tile + item % per_head) * BQ;
    load_rows<HS>(sq + stage * BQ * S, f.q + b * f.q_batch_stride + h * f.q_head_stride, f.q_row_stride, q0, BQ,
                  f.seq);
    load_rows<HS>(sdo + stage * BQ * S, p.dout + b * p.do_batch_stride + h * p.do_head_stride, p.do_row_stride,
                  q0, BQ, f.seq);
    for (int r = threadIdx.x; r < BQ; r += Cfg::kThreads) {
      const int t = q0 + r;
      const int64_t at = (int64_t(b) * f.heads + h) * f.seq + t;
      // Rows beyond T: lse = +inf makes P = 0, D = 0.
      slse[stage * BQ + r] = t < f.seq ? f.lse[at] * kLog2e : INFINITY;
      sd[stage * BQ + r] = t < f.seq ? dsum[at] : 0.f;
    }
  };
  if (items > 0) load_item(0, 0);
  cp_async_commit();

  const int key_a = k0 + warp * 16 + lane / 4, key_b = key_a + 8;  // this thread's two keys
  for (int item = 0; item < items; ++item) {
    const int stage = item % Cfg::kStages;
    if (item + 1 < items) {
      load_item(item + 1, (item + 1) % Cfg::kStages);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int h = hk * group + item / per_head, q0 = (first_tile + item % per_head) * BQ;
    const __nv_bfloat16* tq = sq + stage * BQ * S;
    const __nv_bfloat16* tdo = sdo + stage * BQ * S;
    const float* tl = slse + stage * BQ;
    const float* td = sd + stage * BQ;

    // Sᵀ (16 keys x BQ queries) = K_w · Q_iᵀ and dPᵀ = V_w · dO_iᵀ.
    float s[BQ / 8][4], dp[BQ / 8][4];
#pragma unroll
    for (int n = 0; n < BQ / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      unsigned kf[4], vf[4];
      ldmatrix_x4(kf, a_addr(sk, S, warp * 16, ks * 16));
      ldmatrix_x4(vf, a_addr(sv, S, warp * 16, ks * 16));
#pragma unroll
      for (int n = 0; n < BQ / 8; n += 2) {
        unsigned qf[4], df[4];
        ldmatrix_x4(qf, b_addr(tq, S, n * 8, ks * 16));
        ldmatrix_x4(df, b_addr(tdo, S, n * 8, ks * 16));
        mma_bf16_16816(s[n], kf, qf[0], qf[1]);
        mma_bf16_16816(s[n + 1], kf, qf[2], qf[3]);
        mma_bf16_16816(dp[n], vf, df[0], df[1]);
        mma_bf16_16816(dp[n + 1], vf, df[2], df[3]);
      }
    }
    // Pᵀ = exp2(S·scale·log2e - lse₂) under the causal mask; dSᵀ = Pᵀ ∘ (dPᵀ - D). Both once per tile.
    unsigned pf[BQ / 16][4], dsf[BQ / 16][4];
#pragma unroll
    for (int n = 0; n < BQ / 8; ++n) {
      float pe[4], dse[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qcol = n * 8 + (lane % 4) * 2 + (e & 1), query = q0 + qcol;
        const int key = e < 2 ? key_a : key_b;
        const float pv = query >= key ? exp2f(s[n][e] * scale_log2 - tl[qcol]) : 0.f;
        pe[e] = pv;
        dse[e] = pv * (dp[n][e] - td[qcol]);
      }
      pf[n / 2][(n % 2) * 2 + 0] = pack_bf16x2(pe[0], pe[1]);
      pf[n / 2][(n % 2) * 2 + 1] = pack_bf16x2(pe[2], pe[3]);
      dsf[n / 2][(n % 2) * 2 + 0] = pack_bf16x2(dse[0], dse[1]);
      dsf[n / 2][(n % 2) * 2 + 1] = pack_bf16x2(dse[2], dse[3]);
      // dS (queries x keys) for dQ: stored transposed, one bf16 at a time.
      const int kr = warp * 16 + lane / 4;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qcol = n * 8 + (lane % 4) * 2 + (e & 1);
        sds[qcol * DS + kr + (e < 2 ? 0 : 8)] = __float2bfloat16_rn(dse[e]);
      }
    }
    // dV_w += Pᵀ · dO_i and dK_w += dSᵀ · Q_i (k dim = queries).
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) {
#pragma unroll
      for (int n = 0; n < HS / 8; n += 2) {
        unsigned df[4], qf[4];
        ldmatrix_x4_trans(df, bt_addr(tdo, S, kk * 16, n * 8));
        ldmatrix_x4_trans(qf, bt_addr(tq, S, kk * 16, n * 8));
        mma_bf16_16816(dv[n], pf[kk], df[0], df[1]);
        mma_bf16_16816(dv[n + 1], pf[kk], df[2], df[3]);
        mma_bf16_16816(dk[n], dsf[kk], qf[0], qf[1]);
        mma_bf16_16816(dk[n + 1], dsf[kk], qf[2], qf[3]);
      }
    }
    __syncthreads();  // dS complete
    // dQ_i (BQ x HS) += dS (BQ x BK) · K_j (BK x HS): warps split the query rows (16 each) and,
    // when BQ < 16 * warps, the head dim.
    constexpr int kRowWarps = BQ / 16, kColWarps = Cfg::kWarps / kRowWarps, kCols = HS / kColWarps;
    const int wr = warp % kRowWarps, wc = warp / kRowWarps;
    float dq[kCols / 8][4];
#pragma unroll
    for (int i = 0; i < kCols / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      unsigned af[4];
      ldmatrix_x4(af, a_addr(sds, DS, wr * 16, kk * 16));
#pragma unroll
      for (int n = 0; n < kCols / 8; n += 2) {
        unsigned kf[4];
        ldmatrix_x4_trans(kf, bt_addr(sk, S, kk * 16, wc * kCols + n * 8));
        mma_bf16_16816(dq[n], af, kf[0], kf[1]);
        mma_bf16_16816(dq[n + 1], af, kf[2], kf[3]);
      }
    }
    float* dqb = dq_sum + (int64_t(b) * f.heads + h) * f.seq * HS;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int query = q0 + wr * 16 + lane / 4 + r * 8;
      if (query >= f.seq) continue;
#pragma unroll
      for (int n = 0; n < kCols / 8; ++n) {
        const int col = wc * kCols + n * 8 + (lane % 4) * 2;
        atomicAdd(dqb + int64_t(query) * HS + col, dq[n][2 * r] * f.scale);
        atomicAdd(dqb + int64_t(query) * HS + col + 1, dq[n][2 * r + 1] * f.scale);
      }
    }
    __syncthreads();  // this stage's Q, dO and dS are free for reuse
  }

  // dK = scale · Σ dSᵀ Q, dV = Σ Pᵀ dO: written once per key (keys beyond T are not stored).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = r == 0 ? key_a : key_b;
    if (key >= f.seq) continue;
    float* dkrow = p.dk + b * p.dk_batch_stride + hk * p.dk_head_stride + int64_t(key) * p.dk_row_stride;
    float* dvrow = p.dv + b * p.dv_batch_stride + hk * p.dv_head_stride + int64_t(key) * p.dv_row_stride;
#pragma unroll
    for (int n = 0; n < HS / 8; ++n) {
      const int col = n * 8 + (lane % 4) * 2;
      dkrow[col] = dk[n][2 * r] * f.scale;
      dkrow[col + 1] = dk[n][2 * r + 1] * f.scale;
      dvrow[col] = dv[n][2 * r];
      dvrow[col + 1] = dv[n][2 * r + 1];
    }
  }
}

// Step 3: dq (strided f32) = the f32 sum (B, NH, T, HS).
__global__ void flash_backward_dq_kernel(const FlashAttentionBackwardParams p, const float* dq_sum) {
  const FlashAttentionParams& f = p.fwd;
  const int64_t n = int64_t(f.batch) * f.heads * f.seq * f.head_dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int c = int(i % f.head_dim);
    const int64_t row = i / f.head_dim;
    const int t = int(row % f.seq), h = int((row / f.seq) % f.heads), b = int(row / (int64_t(f.seq) * f.heads));
    p.dq[b * p.dq_batch_stride + h * p.dq_head_stride + int64_t(t) * p.dq_row_stride + c] = dq_sum[i];
  }
}

template <int HS>
constexpr std::size_t forward_smem() {
  using Cfg = FlashConfig<HS>;
  return 2 * (Cfg::kBlockQ + 2 * Cfg::kStages * Cfg::kBlockK) * Cfg::kStride;
}
template <int HS>
constexpr std::size_t backward_smem() {
  using Cfg = FlashConfig<HS>;
  return 2 * (2 * Cfg::kBlockK + 2 * Cfg::kStages * Cfg::kBwdBlockQ) * Cfg::kStride +
         2 * Cfg::kBwdBlockQ * (Cfg::kBlockK + 8) + 4 * 2 * Cfg::kStages * Cfg::kBwdBlockQ;
}

void check(bool ok, const std::string& what) {
  if (!ok) throw CudaError("flash_attention: " + what);
}

void check_params(const FlashAttentionParams& p) {
  check(p.head_dim == 64 || p.head_dim == 128,
        "head size " + std::to_string(p.head_dim) + " is not supported (64 or 128)");
  check(p.batch >= 1 && p.seq >= 1 && p.heads >= 1 && p.kv_heads >= 1, "empty batch, sequence or heads");
  check(p.heads % p.kv_heads == 0, "NH = " + std::to_string(p.heads) + " is not a multiple of NKV = " +
                                       std::to_string(p.kv_heads));
  check_grid("flash_attention", "NH (heads)", p.heads, kMaxGridYZ);
  check_grid("flash_attention", "B (batch)", p.batch, kMaxGridYZ);
  auto aligned = [](const void* ptr, int64_t s0, int64_t s1, int64_t s2) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && s0 % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0;
  };
  check(aligned(p.q, p.q_batch_stride, p.q_row_stride, p.q_head_stride) &&
            aligned(p.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride) &&
            aligned(p.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride) &&
            aligned(p.o, p.o_batch_stride, p.o_row_stride, p.o_head_stride),
        "q, k, v, o need 16-byte aligned pointers and strides that are multiples of 8 elements");
}

}  // namespace

int64_t flash_attention_backward_workspace(int batch, int heads, int seq, int head_dim) {
  return int64_t(batch) * heads * seq * (1 + int64_t(head_dim));
}

void flash_attention_forward(const FlashAttentionParams& p, cudaStream_t stream) {
  check_params(p);
  auto launch = [&](auto kernel, std::size_t smem, int block_q, int threads) {
    opt_in_smem(kernel, smem, "flash_attention_forward");
    const dim3 grid(ceil_div(p.seq, block_q), static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch));
    kernel<<<grid, threads, smem, stream>>>(p);
    LMF_CUDA_LAUNCH_CHECK();
  };
  if (p.head_dim == 64) {
    launch(flash_forward_kernel<64>, forward_smem<64>(), FlashConfig<64>::kBlockQ, FlashConfig<64>::kThreads);
  } else {
    launch(flash_forward_kernel<128>, forward_smem<128>(), FlashConfig<128>::kBlockQ, FlashConfig<128>::kThreads);
  }
}

void flash_attention_backward(const FlashAttentionBackwardParams& p, cudaStream_t stream) {
  const FlashAttentionParams& f = p.fwd;
  check_params(f);
  check(p.workspace != nullptr && p.dq && p.dk && p.dv && p.dout && f.lse, "missing backward operand");
  check(reinterpret_cast<uintptr_t>(p.dout) % 16 == 0 && p.do_batch_stride % 8 == 0 && p.do_row_stride % 8 == 0 &&
            p.do_head_stride % 8 == 0,
        "dout needs a 16-byte aligned pointer and strides that are multiples of 8 elements");
  float* dsum = p.workspace;
  float* dq_sum = p.workspace + int64_t(f.batch) * f.heads * f.seq;
  const int64_t rows = int64_t(f.batch) * f.heads * f.seq;
  LMF_CUDA_CHECK(cudaMemsetAsync(dq_sum, 0, sizeof(float) * rows * f.head_dim, stream));
  check_grid("flash_attention_backward", "B*NH*T rows / 8", (rows + 7) / 8, kMaxGridX);
  flash_backward_dot_kernel<<<ceil_div(rows, 8), 256, 0, stream>>>(p, dsum);
  LMF_CUDA_LAUNCH_CHECK();
  auto launch = [&](auto kernel, std::size_t smem, int threads) {
    opt_in_smem(kernel, smem, "flash_attention_backward");
    const dim3 grid(ceil_div(f.seq, 64), static_cast<unsigned>(f.kv_heads), static_cast<unsigned>(f.batch));
    kernel<<<grid, threads, smem, stream>>>(p, dsum, dq_sum);
    LMF_CUDA_LAUNCH_CHECK();
  };
  if (f.head_dim == 64) {
    launch(flash_backward_kernel<64>, backward_smem<64>(), FlashConfig<64>::kThreads);
  } else {
    launch(flash_backward_kernel<128>, backward_smem<128>(), FlashConfig<128>::kThreads);
  }
  flash_backward_dq_kernel<<<grid_for(rows * f.head_dim, 256), 256, 0, stream>>>(p, dq_sum);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
