// Causal scaled dot-product attention, fused: one (batch, head) pair at a time, its scores
// computed a block of query rows at a time in a thread-local buffer (Br, T), so memory is
// O(threads * Br * T) and the masked upper triangle is never multiplied (block i only sees keys
// [0, i1)). The forward saves the log-sum-exp of each row; the backward recomputes the
// probabilities from it rather than keeping B*NH*T*T of them.
// Shapes: q, k, v, out (B, NH, T, HS) as strided views (HeadLayout), lse (B*NH, T); scale 1/sqrt(HS).
// The strides let the GPT read q, k and v straight out of the (B, T, 3C) projection and write its
// output straight into (B, T, C), with no permuting copies either way.
//   S = scale q k^T (causal), P = softmax(S), out = P v
// Gradient: dv = P^T dout, dP = dout v^T, dS = P * (dP - rowsum(P * dP)),
//           dq = scale dS k, dk = scale dS^T q.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_kernel.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {
namespace {

// Query rows per block: large enough for efficient GEMMs, small enough that the (Br, T) score
// block stays in L2 for T up to a few thousand.
constexpr int64_t kBlockRows = 64;

// A view of rows of a row-major matrix for gemm_kernel (`trans`: use it transposed).
Operand rows_of(const float* data, int64_t ld, bool trans = false) { return {data, ld, trans}; }

// c (m, n; ldc) (+)= op(a) op(b), single-threaded, always f32 (the scores feed a softmax).
void product(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
             bool accumulate) {
  gemm_serial(a, b, c, ldc, m, n, k, accumulate, /*allow_bf16=*/false);
}

int64_t head_offset(const HeadLayout& l, int64_t bh, int64_t nh) {
  return (bh / nh) * l.batch + (bh % nh) * l.head;
}

}  // namespace

HeadLayout HeadLayout::contiguous(int64_t nh, int64_t t, int64_t hs) { return {nh * t * hs, t * hs, hs}; }
HeadLayout HeadLayout::interleaved(int64_t nh, int64_t t, int64_t hs, int64_t parts) {
  return {t * parts * nh * hs, hs, parts * nh * hs};
}

void attention_forward(float* out, const HeadLayout& out_l, float* lse, const float* q,
                       const float* k, const float* v, const HeadLayout& in_l, int64_t b,
                       int64_t nh, int64_t t, int64_t hs) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t bh = b * nh;
#pragma omp parallel
  {
    float* scores = vec::thread_scratch<float>(0, static_cast<std::size_t>(kBlockRows * t));  // (Br, T)
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < bh; ++h) {
      const int64_t off = head_offset(in_l, h, nh);
      float* lse_h = lse + h * t;  // (T)
      for (int64_t i0 = 0; i0 < t; i0 += kBlockRows) {
        const int64_t rows = std::min(kBlockRows, t - i0), i1 = i0 + rows;
        float* s = scores;  // (rows, i1): unscaled q kᵀ
        product(rows_of(q + off + i0 * in_l.row, in_l.row), rows_of(k + off, in_l.row, true), s, i1, rows, i1, hs,
                false);
        for (int64_t r = 0; r < rows; ++r) {
          float* sr = s + r * i1;
          const int64_t valid = i0 + r + 1;  // keys 0..i are visible to query i
#pragma omp simd
          for (int64_t j = 0; j < valid; ++j) sr[j] *= scale;
          const float m = vec::max_of(sr, valid);
          const float sum = vec::exp_shift_sum(sr, sr, valid, m);
          const float inv = 1.0f / sum;
#pragma omp simd
          for (int64_t j = 0; j < valid; ++j) sr[j] *= inv;
          std::fill(sr + valid, sr + i1, 0.f);
          lse_h[i0 + r] = m + std::log(sum);
        }
        float* o_rows = out + head_offset(out_l, h, nh) + i0 * out_l.row;
        product(rows_of(s, i1), rows_of(v + off, in_l.row), o_rows, out_l.row, rows, hs, i1, false);
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const HeadLayout& din_l,
                        const float* dout, const HeadLayout& dout_l, const float* q, const float* k,
                        const float* v, const HeadLayout& in_l, const float* lse, int64_t b,
                        int64_t nh, int64_t t, int64_t hs) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t bh = b * nh;
#pragma omp parallel
  {
    float* probs = vec::thread_scratch<float>(0, static_cast<std::size_t>(kBlockRows * t));   // (Br, T)
    float* dprobs = vec::thread_scratch<float>(1, static_cast<std::size_t>(kBlockRows * t));  // (Br, T)
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < bh; ++h) {
      const int64_t off = head_offset(in_l, h, nh), doff = head_offset(din_l, h, nh);
      for (int64_t i = 0; i < t; ++i) {  // dk and dv accumulate over the query blocks
        std::fill(dk + doff + i * din_l.row, dk + doff + i * din_l.row + hs, 0.f);
        std::fill(dv + doff + i * din_l.row, dv + doff + i * din_l.row + hs, 0.f);
      }
      const float* lse_h = lse + h * t;
      for (int64_t i0 = 0; i0 < t; i0 += kBlockRows) {
        const int64_t rows = std::min(kBlockRows, t - i0), i1 = i0 + rows;
        float *p = probs, *dp = dprobs;  // (rows, i1)
        const float* q_rows = q + off + i0 * in_l.row;
        const float* g_rows = dout + head_offset(dout_l, h, nh) + i0 * dout_l.row;
        product(rows_of(q_rows, in_l.row), rows_of(k + off, in_l.row, true), p, i1, rows, i1, hs, false);
        for (int64_t r = 0; r < rows; ++r) {
          float* pr = p + r * i1;
          const int64_t valid = i0 + r + 1;
          const float l = lse_h[i0 + r];
#pragma omp simd
          for (int64_t j = 0; j < valid; ++j) pr[j] *= scale;
          vec::exp_shift_scale(pr, pr, valid, l, 1.0f);
          std::fill(pr + valid, pr + i1, 0.f);
        }
        // dv[0:i1] += pᵀ dout[i0:i1]
        product(rows_of(p, i1, true), rows_of(g_rows, dout_l.row), dv + doff, din_l.row, i1, hs, rows, true);
        // dp = dout[i0:i1] vᵀ
        product(rows_of(g_rows, dout_l.row), rows_of(v + off, in_l.row, true), dp, i1, rows, i1, hs, false);
        for (int64_t r = 0; r < rows; ++r) {
          const float* pr = p + r * i1;
          float* dr = dp + r * i1;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t j = 0; j < i1; ++j) dot += pr[j] * dr[j];
#pragma omp simd
          for (int64_t j = 0; j < i1; ++j) dr[j] = scale * pr[j] * (dr[j] - dot);
        }
        // dq[i0:i1] = dp k[0:i1];  dk[0:i1] += dpᵀ q[i0:i1]
        product(rows_of(dp, i1), rows_of(k + off, in_l.row), dq + doff + i0 * din_l.row, din_l.row, rows, hs,
                i1, false);
        product(rows_of(dp, i1, true), rows_of(q_rows, in_l.row), dk + doff, din_l.row, i1, hs, rows, true);
      }
    }
  }
}

}  // namespace lmf::cpu
