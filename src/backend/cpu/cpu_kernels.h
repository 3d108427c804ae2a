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
/// p = p · decay_factor − (lr / bias_correction1) m / (√v / bias_correction2_sqrt + eps).
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float decay_factor,
                  float lr, float beta1, float beta2, float eps, float bias_correction1,
                  float bias_correction2_sqrt);

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

/// Causal attention over B * NH heads. q, k, v share the layout in_l, out has out_l; lse (B*NH, T)
/// is the log-sum-exp of each row of scaled scores, saved for the backward pass, which recomputes
/// the probabilities from it. dq, dk, dv share din_l and are written (dk, dv zeroed first).
void attention_forward(float* out, const HeadLayout& out_l, float* lse, const float* q,
                       const float* k, const float* v, const HeadLayout& in_l, int64_t b,
                       int64_t nh, int64_t t, int64_t hs);
void attention_backward(float* dq, float* dk, float* dv, const HeadLayout& din_l,
                        const float* dout, const HeadLayout& dout_l, const float* q, const float* k,
                        const float* v, const HeadLayout& in_l, const float* lse, int64_t b,
                        int64_t nh, int64_t t, int64_t hs);

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

}  // namespace lmf::cpu
