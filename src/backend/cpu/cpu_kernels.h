// The CPU kernels behind lmforge's ops: raw pointers and sizes in, no Tensor types, so the op layer
// (src/ops/) owns every shape and dtype check. Every matrix product goes through Eigen (gemm below);
// everything else is OpenMP over rows, batch or heads. Reductions use a fixed chunking of the rows
// so results are bitwise identical for any thread count.
// Dim letters: B batch, T time, C channels, NH heads, HS head size, V vocabulary, N rows.
// Gradient rule: activation grads are written (=); callers zero nothing in advance. Kernels that
// can fuse an accumulation take `accumulate` (+=), which the autograd engine asks for when the
// destination is a parameter's gradient (cuda_backend.h has the same entry points and arguments).
#pragma once
#include <cstdint>

// Relative, so targets that see only src/ (bench_gemm) still find the shared op table.
#include "../../../kernels/common/op_table.h"
#include "lmforge/core/compute.h"

namespace lmf::cpu {

// --- matrix products (gemm.cpp) -------------------------------------------------------------
/// c (M, N) = op(a) · op(b), or += when accumulate. op(a) is (M, K): a is (M, K), or (K, M) when
/// trans_a; op(b) is (K, N): b is (K, N), or (N, K) when trans_b. Row-major, contiguous.
/// Parallel over row blocks of c; runs on the calling thread when already inside a parallel region.
/// With gelu_out, also gelu_out (M, N) = gelu(c) for the finished c, each tile while it is in cache.
/// options.cpu_matmul_bf16 rounds the operands to bf16 (where the CPU has AVX-512 BF16).
void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, bool trans_a,
          bool trans_b, bool accumulate = false, float* gelu_out = nullptr,
          const ComputeOptions& options = ComputeOptions{});
/// `batch` independent products; strides in elements between consecutive matrices (a stride of 0
/// shares that operand across the batch; c's stride must not be 0). Parallel over batch x row blocks.
void gemm_batched(int64_t batch, const float* a, int64_t stride_a, const float* b,
                  int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k,
                  bool trans_a, bool trans_b, bool accumulate = false, float* gelu_out = nullptr,
                  const ComputeOptions& options = ComputeOptions{});
/// gemm_batched where a and/or b may be stored as bf16 (a_bf16, b_bf16: the pointer is to bf16
/// elements): mixed precision's activations and weight copies, read without a rounding pass (a bf16
/// widens exactly). The product's precision still follows options.cpu_matmul_bf16; c is f32.
void gemm_batched_mixed(int64_t batch, const void* a, bool a_bf16, int64_t stride_a, const void* b, bool b_bf16,
                        int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k, bool trans_a,
                        bool trans_b, bool accumulate = false, float* gelu_out = nullptr,
                        const ComputeOptions& options = ComputeOptions{});
/// out (N, OUT) = x (N, IN) · w (OUT, IN)ᵀ + bias (OUT) (bias may be null): the bias rows are laid
/// down first and the GEMM accumulates onto them. With gelu_out, also gelu_out (N, OUT) = gelu(out).
void linear_forward(float* out, const float* x, const float* w, const float* bias, int64_t n,
                    int64_t out_features, int64_t in_features, float* gelu_out = nullptr,
                    const ComputeOptions& options = ComputeOptions{});
/// out (cols) = factor * sum over rows of in (rows, cols), or += when accumulate; deterministic,
/// accumulated in double.
void column_sums(const float* in, float* out, int64_t rows, int64_t cols, float factor = 1.f,
                 bool accumulate = false);

// --- elementwise with a periodic second operand (elementwise.cpp) ----------------------------
// a, out (N); b (NB) with N % NB == 0, read as b[i % NB] (same shape, suffix broadcast, or scalar).
void add_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb);
void sub_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb);
void mul_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb);
void scale_forward(float* out, const float* a, float factor, int64_t n);
/// da (N) = dout * b; db (NB) = sum over the broadcast of dout * a. Either may be null.
void mul_backward(float* da, float* db, const float* dout, const float* a, const float* b,
                  int64_t n, int64_t nb);

// --- reductions (reduce.cpp) -----------------------------------------------------------------
/// Sum of n elements, accumulated in double over fixed chunks.
double sum_all(const float* x, int64_t n);
/// x (OUTER, D, INNER) -> out (OUTER, INNER) = factor * sum over D.
void sum_dim_forward(float* out, const float* x, int64_t outer, int64_t d, int64_t inner, float factor);
/// dx (OUTER, D, INNER) = factor * dout (OUTER, INNER), broadcast over D.
void sum_dim_backward(float* dx, const float* dout, int64_t outer, int64_t d, int64_t inner,
                      float factor);
/// out (N) = value.
void fill(float* out, float value, int64_t n);

// --- optimizer (adamw.cpp) --------------------------------------------------------------------
/// AdamW (PyTorch's semantics) over n elements: m = β1 m + (1−β1) g, v = β2 v + (1−β2) g²,
/// p = p · decay_factor − (lr / bias_correction1) m / (√v / bias_correction2_sqrt + eps), where g
/// is the stored gradient times grad_scale (one rounded product, as if the gradient had been
/// scaled in place first: the clip factor, without a pass over the slab).
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float decay_factor,
                  float lr, float beta1, float beta2, float eps, float bias_correction1,
                  float bias_correction2_sqrt, float grad_scale = 1.f);

// --- model ops ---------------------------------------------------------------------------------
/// Throws lmf::Error "<what> <id> at position <i> is outside the vocabulary of size <V>" for the
/// first id outside [0, V) (ids equal to `allowed` pass); `what` names the op and the operand
/// ("embedding: id", "cross_entropy: target").
void check_ids_i32(const char* what, const int32_t* ids, int64_t n, int64_t v, int32_t allowed);
void check_ids_u16(const char* what, const uint16_t* ids, int64_t n, int64_t v);
/// out (N, C) = weight[ids[n]]; ids already validated against V.
void embedding_forward_i32(float* out, const float* weight, const int32_t* ids, int64_t n, int64_t c);
void embedding_forward_u16(float* out, const float* weight, const uint16_t* ids, int64_t n, int64_t c);
/// dweight (V, C) = scatter-sum of dout (N, C) by ids: written (zeroed first), or added to when
/// accumulate; deterministic.
void embedding_backward_i32(float* dweight, const float* dout, const int32_t* ids, int64_t n,
                            int64_t c, int64_t v, bool accumulate = false);
void embedding_backward_u16(float* dweight, const float* dout, const uint16_t* ids, int64_t n,
                            int64_t c, int64_t v, bool accumulate = false);

/// x (N, C), weight (C), bias (C) or null -> out (N, C); saves mean (N) and rstd (N).
void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                        const float* bias, int64_t n, int64_t c, float eps);
/// sum (N, C) = x + y, and layer_norm_forward of sum, in one pass over each row (the GPT's
/// residual add followed by the next layer norm); the same bits as the two kernels.
void add_layer_norm_forward(float* sum, float* out, float* mean, float* rstd, const float* x,
                            const float* y, const float* weight, const float* bias, int64_t n,
                            int64_t c, float eps);
/// dx (N, C), dweight (C), dbias (C) (null to skip) from dout (N, C) and the saved mean, rstd.
void layer_norm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                         const float* weight, const float* mean, const float* rstd, int64_t n,
                         int64_t c);

/// x (N, C), weight (C) -> out (N, C) = x * rstd * weight, rstd (N) = 1/sqrt(mean(x²) + eps) saved.
void rms_norm_forward(float* out, float* rstd, const float* x, const float* weight, int64_t n, int64_t c,
                      float eps);
/// sum (N, C) = x + y, and rms_norm_forward of sum, in one pass over each row; the same bits.
void add_rms_norm_forward(float* sum, float* out, float* rstd, const float* x, const float* y,
                          const float* weight, int64_t n, int64_t c, float eps);
/// dx (N, C), dweight (C) (null to skip) from dout (N, C) and the saved rstd; deterministic.
void rms_norm_backward(float* dx, float* dweight, const float* dout, const float* x, const float* weight,
                       const float* rstd, int64_t n, int64_t c);

/// Rotary embedding of x (B, NH, T, HS), element (b, h, t, d) at b * stride_b + h * stride_h +
/// t * stride_t + d, into out (B, NH, T, HS) contiguous; cos, sin (L, HS/2), row offset + t for
/// step t. sin_sign -1 rotates backwards (the gradient). out must not alias x.
void rotary_apply(float* out, const float* x, const float* cos, const float* sin, int64_t b, int64_t nh,
                  int64_t t, int64_t hs, int64_t stride_b, int64_t stride_h, int64_t stride_t, int64_t offset,
                  float sin_sign);

/// out (N) = silu(gate) * up; dgate = dout * up * silu'(gate), dup = dout * silu(gate) (null to skip).
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n);

/// out (N) = gelu(x), tanh approximation; dx (N) = dout * gelu'(x).
void gelu_forward(float* out, const float* x, int64_t n);
/// gelu_forward on the calling thread only (the GEMM epilogue of linear_gelu); the same bits.
void gelu_row(float* out, const float* x, int64_t n);
void gelu_backward(float* dx, const float* dout, const float* x, int64_t n);

/// y (N, C) = softmax of each row of x; dx = y * (dy - sum(dy * y)).
void softmax_forward(float* y, const float* x, int64_t n, int64_t c);
void softmax_backward(float* dx, const float* dy, const float* y, int64_t n, int64_t c);

/// Where head h of batch b keeps its (T, HS) rows: element (b, h, t, d) is at
/// b * batch + h * head + t * row + d.
struct HeadLayout {
  int64_t batch, head, row;
  /// (B, NH, T, HS), contiguous.
  static HeadLayout contiguous(int64_t nh, int64_t t, int64_t hs);
  /// (B, T, parts, NH, HS): q, k, v inside a (B, T, 3C) projection (parts 3, each starting C
  /// further), or an attention output in (B, T, C) (parts 1).
  static HeadLayout interleaved(int64_t nh, int64_t t, int64_t hs, int64_t parts);
};

/// Sizes of one attention call: B sequences, NH query heads reading NKV key/value heads (NKV
/// divides NH), Tq queries that are the last Tq of Tk positions, head size HS.
struct AttentionDims {
  int64_t b, nh, nkv, tq, tk, hs;
};

/// Causal attention over B * NH query heads; query head h reads key/value head h / (NH / NKV),
/// query i sees keys [0, Tk - Tq + i]. Each operand has its own layout; lse (B*NH, Tq) is the
/// log-sum-exp of each row of scaled scores, saved for the backward pass, which recomputes the
/// probabilities from it. dq, dk, dv are written (dk, dv of a shared head sum over its group).
void attention_forward(const AttentionDims& d, float* out, const HeadLayout& out_l, float* lse, const float* q,
                       const HeadLayout& q_l, const float* k, const HeadLayout& k_l, const float* v,
                       const HeadLayout& v_l);
void attention_backward(const AttentionDims& d, float* dq, const HeadLayout& dq_l, float* dk, const HeadLayout& dk_l,
                        float* dv, const HeadLayout& dv_l, const float* dout, const HeadLayout& dout_l,
                        const float* q, const HeadLayout& q_l, const float* k, const HeadLayout& k_l,
                        const float* v, const HeadLayout& v_l, const float* lse);

/// logits (N, V), targets (N) -> lse (N); loss[0] = mean row loss over the rows whose target is not
/// ignore_index and count[0] = their number (as float); loss 0 when every row is ignored. Targets
/// already validated.
void cross_entropy_forward(float* loss, float* count, float* lse, const float* logits, const int32_t* targets,
                           int64_t n, int64_t v, int32_t ignore_index);
/// dlogits (N, V) = (softmax - onehot) * dloss[0] / count[0]; 0 on ignored rows or when count is 0.
void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            const float* dloss, const float* count, int64_t n, int64_t v, int32_t ignore_index);

/// out (N) = x * keep / (1 - p), keep = philox_uniform(seed, base + i) >= p. Also the backward
/// (x = dout), since the mask is recomputed from (seed, base).
void dropout_apply(float* out, const float* x, int64_t n, float p, uint64_t seed, uint64_t base);

// --- primitive ops: broadcasting, unary table, max, cat/where/gather (primitives.cpp) ----------
// Same names and arguments as lmf::cuda:: (which takes the Device first). Layouts and formulas come
// from kernels/common/op_table.h, shared with the CUDA kernels.
/// out (contiguous, layout shape) = op(a, b), a and b read at layout.strides[0] and [1].
void broadcast_binary(kernels::BinaryOp op, float* out, const float* a, const float* b,
                      const kernels::BroadcastLayout& layout);
/// ga, gb (contiguous, layout shape; either null) = g * d(op)/da, g * d(op)/db elementwise, a and b
/// read as in broadcast_binary, g contiguous. sum_to then reduces them to the inputs' shapes.
void broadcast_binary_backward(kernels::BinaryOp op, float* ga, float* gb, const float* g, const float* a,
                               const float* b, const kernels::BroadcastLayout& layout);
/// out (kept shape) = sum of in over the reduced dims; deterministic (index order, double).
void sum_to(float* out, const float* in, const kernels::ReduceLayout& layout);
/// out (N) = f(x); dx (N) = dout * f'(x) from x and y = f(x). p: pow's exponent.
void unary_forward(kernels::UnaryOp op, float* out, const float* x, float p, int64_t n);
void unary_backward(kernels::UnaryOp op, float* dx, const float* dout, const float* x, const float* y,
                    float p, int64_t n);
/// x (OUTER, D, INNER), D >= 1 -> out, argmax (OUTER, INNER): the first maximum (a NaN wins).
void max_dim_forward(float* out, int32_t* argmax, const float* x, int64_t outer, int64_t d, int64_t inner);
/// dx (OUTER, D, INNER) = dout at argmax, 0 elsewhere (written).
void max_dim_backward(float* dx, const float* dout, const int32_t* argmax, int64_t outer, int64_t d,
                      int64_t inner);
/// dst[r * dst_stride + j] = src[r * src_stride + j] for r < rows, j < width.
void copy_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows,
               int64_t width);
/// out = cond != 0 ? a : b; cond, a, b at layout.strides[0], [1], [2].
void where_forward(float* out, const float* cond, const float* a, const float* b,
                   const kernels::BroadcastLayout& layout);
/// ga = cond ? g : 0, gb = cond ? 0 : g (contiguous, layout shape; either null); g contiguous.
void where_backward(float* ga, float* gb, const float* g, const float* cond, const kernels::BroadcastLayout& layout);
/// x (ROWS, N), index (ROWS, K) in [0, N) -> out (ROWS, K) = x[r, index[r, k]].
void gather_forward(float* out, const float* x, const int32_t* index, int64_t rows, int64_t n, int64_t k);
/// dx (ROWS, N) = scatter-add of dout (ROWS, K) by index (written; deterministic).
void gather_backward(float* dx, const float* dout, const int32_t* index, int64_t rows, int64_t n, int64_t k);
// --- end primitive ops ---------------------------------------------------------------------------

}  // namespace lmf::cpu
