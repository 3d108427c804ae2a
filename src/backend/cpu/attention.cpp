// Causal scaled dot-product attention, fused: one (batch, head) pair at a time, its scores
// computed a block of query rows at a time in a thread-local buffer (Br, Tk), so memory is
// O(threads * Br * Tk) and the masked upper triangle is never multiplied (block [i0, i1) only sees
// keys [0, Tk - Tq + i1)). The forward saves the log-sum-exp of each row; the backward recomputes
// the probabilities from it rather than keeping B*NH*Tq*Tk of them.
// Shapes: q, out (B, NH, Tq, HS), k, v (B, NKV, Tk, HS) as strided views (HeadLayout), lse
// (B*NH, Tq); scale 1/sqrt(HS). Query head h reads key/value head h / (NH / NKV) in place, and the
// queries are the last Tq of the Tk positions (the first Tk - Tq come from a KV cache). The strides
// let the GPT read q, k and v straight out of the (B, T, 3C) projection and write its output
// straight into (B, T, C), with no permuting copies either way.
//   S = scale q k^T (causal), P = softmax(S), out = P v
// Gradient: dv = P^T dout, dP = dout v^T, dS = P * (dP - rowsum(P * dP)),
//           dq = scale dS k, dk = scale dS^T q; a shared key/value head sums dk and dv over the
//           query heads of its group. The backward runs one key/value head per task, so those sums
//           have a single writer and a fixed order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_kernel.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {
namespace {

// Query rows per block: large enough for efficient GEMMs, small enough that the (Br, Tk) score
// block stays in L2 for Tk up to a few thousand.
constexpr int64_t kBlockRows = 64;

// A view of rows of a row-major matrix for gemm_kernel (`trans`: use it transposed).
Operand rows_of(const float* data, int64_t ld, bool trans = false) { return {data, ld, trans}; }

// c (m, n; ldc) (+)= op(a) op(b), single-threaded, always f32 (the scores feed a softmax).
void product(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
             bool accumulate) {
  gemm_serial(a, b, c, ldc, m, n, k, accumulate, /*allow_bf16=*/false);
}

// Offset of head `h` of the flattened (B * heads) index in layout l.
int64_t head_offset(const HeadLayout& l, int64_t bh, int64_t heads) {
  return (bh / heads) * l.batch + (bh % heads) * l.head;
}

}  // namespace

HeadLayout HeadLayout::contiguous(int64_t nh, int64_t t, int64_t hs) { return {nh * t * hs, t * hs, hs}; }
HeadLayout HeadLayout::interleaved(int64_t nh, int64_t t, int64_t hs, int64_t parts) {
  return {t * parts * nh * hs, hs, parts * nh * hs};
}

void attention_forward(const AttentionDims& d, float* out, const HeadLayout& out_l, float* lse, const float* q,
                       const HeadLayout& q_l, const float* k, const HeadLayout& k_l, const float* v,
                       const HeadLayout& v_l) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hs));
  const int64_t bh = d.b * d.nh, group = d.nh / d.nkv, shift = d.tk - d.tq, hs = d.hs;
#pragma omp parallel
  {
    float* scores = vec::thread_scratch<float>(0, static_cast<std::size_t>(kBlockRows * d.tk));  // (Br, Tk)
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < bh; ++h) {
      const int64_t kvh = (h / d.nh) * d.nkv + (h % d.nh) / group;  // the key/value head h reads
      const float* q_h = q + head_offset(q_l, h, d.nh);
      const float* k_h = k + head_offset(k_l, kvh, d.nkv);
      const float* v_h = v + head_offset(v_l, kvh, d.nkv);
      float* lse_h = lse + h * d.tq;  // (Tq)
      for (int64_t i0 = 0; i0 < d.tq; i0 += kBlockRows) {
        const int64_t rows = std::min(kBlockRows, d.tq - i0), keys = shift + i0 + rows;
        float* s = scores;  // (rows, keys): unscaled q kᵀ
        product(rows_of(q_h + i0 * q_l.row, q_l.row), rows_of(k_h, k_l.row, true), s, keys, rows, keys, hs, false);
        for (int64_t r = 0; r < rows; ++r) {
          float* sr = s + r * keys;
          const int64_t valid = shift + i0 + r + 1;  // keys 0..shift+i are visible to query i
#pragma omp simd
          for (int64_t j = 0; j < valid; ++j) sr[j] *= scale;
          const float m = vec::max_of(sr, valid);
          const float sum = vec::exp_shift_sum(sr, sr, valid, m);
          const float inv = 1.0f / sum;
#pragma omp simd
          for (int64_t j = 0; j < valid; ++j) sr[j] *= inv;
          std::fill(sr + valid, sr + keys, 0.f);
          lse_h[i0 + r] = m + std::log(sum);
        }
        float* o_rows = out + head_offset(out_l, h, d.nh) + i0 * out_l.row;
        product(rows_of(s, keys), rows_of(v_h, v_l.row), o_rows, out_l.row, rows, hs, keys, false);
      }
    }
  }
}

void attention_backward(const AttentionDims& d, float* dq, const HeadLayout& dq_l, float* dk, const HeadLayout& dk_l,
                        float* dv, const HeadLayout& dv_l, const float* dout, const HeadLayout& dout_l,
                        const float* q, const HeadLayout& q_l, const float* k, const HeadLayout& k_l,
                        const float* v, const HeadLayout& v_l, const float* lse) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hs));
  const int64_t bkv = d.b * d.nkv, group = d.nh / d.nkv, shift = d.tk - d.tq, hs = d.hs;
#pragma omp parallel
  {
    float* probs = vec::thread_scratch<float>(0, static_cast<std::size_t>(kBlockRows * d.tk));   // (Br, Tk)
    float* dprobs = vec::thread_scratch<float>(1, static_cast<std::size_t>(kBlockRows * d.tk));  // (Br, Tk)
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < bkv; ++g) {
      const float* k_g = k + head_offset(k_l, g, d.nkv);
      const float* v_g = v + head_offset(v_l, g, d.nkv);
      float* dk_g = dk + head_offset(dk_l, g, d.nkv);
      float* dv_g = dv + head_offset(dv_l, g, d.nkv);
      for (int64_t i = 0; i < d.tk; ++i) {  // dk and dv accumulate over the query blocks and heads
        std::fill(dk_g + i * dk_l.row, dk_g + i * dk_l.row + hs, 0.f);
        std::fill(dv_g + i * dv_l.row, dv_g + i * dv_l.row + hs, 0.f);
      }
      for (int64_t member = 0; member < group; ++member) {
        const int64_t h = (g / d.nkv) * d.nh + (g % d.nkv) * group + member;  // a query head reading g
        const float* q_h = q + head_offset(q_l, h, d.nh);
        const float* g_h = dout + head_offset(dout_l, h, d.nh);
        float* dq_h = dq + head_offset(dq_l, h, d.nh);
        const float* lse_h = lse + h * d.tq;
        for (int64_t i0 = 0; i0 < d.tq; i0 += kBlockRows) {
          const int64_t rows = std::min(kBlockRows, d.tq - i0), keys = shift + i0 + rows;
          float *p = probs, *dp = dprobs;  // (rows, keys)
          const float* q_rows = q_h + i0 * q_l.row;
          const float* g_rows = g_h + i0 * dout_l.row;
          product(rows_of(q_rows, q_l.row), rows_of(k_g, k_l.row, true), p, keys, rows, keys, hs, false);
          for (int64_t r = 0; r < rows; ++r) {
            float* pr = p + r * keys;
            const int64_t valid = shift + i0 + r + 1;
            const float l = lse_h[i0 + r];
#pragma omp simd
            for (int64_t j = 0; j < valid; ++j) pr[j] *= scale;
            vec::exp_shift_scale(pr, pr, valid, l, 1.0f);
            std::fill(pr + valid, pr + keys, 0.f);
          }
          // dv[0:keys] += pᵀ dout[i0:i1]
          product(rows_of(p, keys, true), rows_of(g_rows, dout_l.row), dv_g, dv_l.row, keys, hs, rows, true);
          // dp = dout[i0:i1] vᵀ
          product(rows_of(g_rows, dout_l.row), rows_of(v_g, v_l.row, true), dp, keys, rows, keys, hs, false);
          for (int64_t r = 0; r < rows; ++r) {
            const float* pr = p + r * keys;
            float* dr = dp + r * keys;
            float dot = 0.f;
#pragma omp simd reduction(+ : dot)
            for (int64_t j = 0; j < keys; ++j) dot += pr[j] * dr[j];
#pragma omp simd
            for (int64_t j = 0; j < keys; ++j) dr[j] = scale * pr[j] * (dr[j] - dot);
          }
          // dq[i0:i1] = dp k[0:keys];  dk[0:keys] += dpᵀ q[i0:i1]
          product(rows_of(dp, keys), rows_of(k_g, k_l.row), dq_h + i0 * dq_l.row, dq_l.row, rows, hs, keys, false);
          product(rows_of(dp, keys, true), rows_of(q_rows, q_l.row), dk_g, dk_l.row, keys, hs, rows, true);
        }
      }
    }
  }
}

}  // namespace lmf::cpu
