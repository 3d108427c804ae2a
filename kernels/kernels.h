// Launchers of every CUDA kernel in kernels/*.cu: raw device pointers, sizes and a stream in, no
// lmforge types, so the op layer (src/ops/) owns every shape and dtype check. Each launcher checks
// its launch and throws lmf::kernels::CudaError (a std::runtime_error) on failure.
// Dim letters: B batch, T time, C channels, NH heads, HS head size, V vocabulary, N rows.
// Gradient rule: activation grads are written (=); kernels that can fuse an accumulation (the GEMM,
// embedding's scatter-add) take an accumulate flag, which the autograd engine sets when the
// destination is a parameter's gradient; other gradients it adds through add_inplace.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/op_table.h"

namespace lmf::kernels {

using bf16_t = __nv_bfloat16;

// --- copies, fills, conversions (copy.cu) -------------------------------------------------------
/// Element types as the kernels see them (the same order as lmf::DType).
enum class ElemType : int { f32 = 0, bf16 = 1, i32 = 2, u16 = 3 };
constexpr int kMaxDims = 8;
/// A strided source: element (i0, ..., i_{nd-1}) lives at base + sum(i_d * strides[d]) elements.
struct StridedLayout {
  int nd = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
};
/// dst (contiguous, numel of src) = src (strided) in logical order, converting through float when
/// the types differ (like the CPU copy); same-type copies move bits.
void strided_copy(void* dst, ElemType dst_type, const void* src, ElemType src_type,
                  const StridedLayout& src_layout, cudaStream_t stream);
/// dst (N) = value, converted to the element type.
void fill(void* dst, ElemType type, float value, int64_t n, cudaStream_t stream);

// --- elementwise (elementwise.cu) -----------------------------------------------------------------
// a, out (N); b (NB) with N % NB == 0, read as b[i % NB] (same shape, suffix broadcast, or scalar).
void add_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb, cudaStream_t stream);
void sub_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb, cudaStream_t stream);
void mul_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb, cudaStream_t stream);
/// add, sub or mul (op; not div) with a, b and out each f32 or bf16 storage, f32 math, b read as
/// b[i % NB]: a bf16 operand is read in place and a bf16 out rounded once.
void binary_forward_typed(BinaryOp op, void* out, ElemType out_type, const void* a, ElemType a_type, const void* b,
                          ElemType b_type, int64_t n, int64_t nb, cudaStream_t stream);
void scale_forward(float* out, const float* a, float factor, int64_t n, cudaStream_t stream);
/// da (N) = dout * b (null to skip); db (NB) = sum over the broadcast of dout * a (null to skip).
void mul_backward(float* da, float* db, const float* dout, const float* a, const float* b, int64_t n,
                  int64_t nb, cudaStream_t stream);
/// mul_backward with a and b each f32 or bf16 storage (dout, da, db f32).
void mul_backward_typed(float* da, float* db, const float* dout, const void* a, ElemType a_type, const void* b,
                        ElemType b_type, int64_t n, int64_t nb, cudaStream_t stream);
/// dst (N) += alpha * src.
void add_inplace(float* dst, const float* src, float alpha, int64_t n, cudaStream_t stream);
/// out (cols) = factor * sum over rows of x (rows, cols) [* y (rows, cols) when y is not null].
/// Deterministic: a fixed tree per column, no atomics.
void column_sums(float* out, const float* x, const float* y, int64_t rows, int64_t cols, float factor,
                 cudaStream_t stream);

// --- reductions (reduce.cu) ----------------------------------------------------------------------
/// Partial sums need this many floats of workspace.
constexpr int kReducePartials = 512;
/// out[0] = factor * sum of x (N) (of x² when square). Two fixed passes through `workspace`
/// (kReducePartials floats): deterministic, no atomics; the result stays on the device.
void sum_all(float* out, const float* x, int64_t n, float factor, bool square, float* workspace,
             cudaStream_t stream);
/// x (OUTER, D, INNER) -> out (OUTER, INNER) = factor * sum over D.
void sum_dim_forward(float* out, const float* x, int64_t outer, int64_t d, int64_t inner, float factor,
                     cudaStream_t stream);
/// dx (OUTER, D, INNER) = factor * dout (OUTER, INNER).
void sum_dim_backward(float* dx, const float* dout, int64_t outer, int64_t d, int64_t inner,
                      float factor, cudaStream_t stream);
/// out (N) = factor * scalar[0]: the backward of a full reduction without reading the scalar on the host.
void broadcast_scalar(float* out, const float* scalar, float factor, int64_t n, cudaStream_t stream);

// --- model ops -------------------------------------------------------------------------------------
/// first_bad[0] = smallest i with ids[i] outside [0, v) and != allowed (or n when none). 64-bit.
void find_invalid_ids_i32(long long* first_bad, const int32_t* ids, int64_t n, int64_t v,
                          int32_t allowed, cudaStream_t stream);
void find_invalid_ids_u16(long long* first_bad, const uint16_t* ids, int64_t n, int64_t v,
                          cudaStream_t stream);

/// out (N, C) = weight (V, C)[ids (N)].
void embedding_forward_i32(float* out, const float* weight, const int32_t* ids, int64_t n, int64_t c,
                           cudaStream_t stream);
void embedding_forward_u16(float* out, const float* weight, const uint16_t* ids, int64_t n, int64_t c,
                           cudaStream_t stream);
/// Workspace bytes embedding_backward needs for n ids.
std::size_t embedding_backward_workspace(int64_t n);
/// dweight (V, C) = scatter-sum of dout (N, C) by id, written (zeroed first), or added to each
/// row when accumulate. Deterministic: ids are stably sorted, then each run of equal ids is summed
/// in position order by one block. ids_i32 (N) are i32 ids (u16 ids are widened first by the
/// caller through strided_copy).
void embedding_backward(float* dweight, const float* dout, const int32_t* ids, int64_t n, int64_t c,
                        int64_t v, bool accumulate, void* workspace, std::size_t workspace_bytes,
                        cudaStream_t stream);

/// x (N, C), weight (C), bias (C) or null -> out (N, C); saves mean (N) and rstd (N).
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t n, int64_t c, float eps, cudaStream_t stream);
/// Floats of workspace layernorm_backward needs.
int64_t layernorm_backward_workspace(int64_t n, int64_t c);
/// dx (N, C), dweight (C), dbias (C) (null to skip); dweight and dbias deterministic via
/// per-chunk partials in `workspace`.
void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t n, int64_t c,
                        float* workspace, cudaStream_t stream);
/// Residual add fused with the layer norm after it, one pass per row: sum (N, C) = x + y and
/// out (N, C) = layer_norm(sum), mean and rstd (N) f32. x, y, sum and out are each f32 or bf16
/// (their ElemType); a bf16 sum is rounded before the statistics are taken, as a separate add and
/// layer_norm would. With y null (and sum null) it is layer_norm of x with typed input and output.
void add_layernorm_forward(void* sum, ElemType sum_type, void* out, ElemType out_type, float* mean, float* rstd,
                           const void* x, ElemType x_type, const void* y, ElemType y_type, const float* weight,
                           const float* bias, int64_t n, int64_t c, float eps, cudaStream_t stream);
/// layernorm_backward reading the saved input x as f32 or bf16 (no widened copy), and, when
/// dresidual (N, C) is not null, writing dx = norm's dx + dresidual (the gradient of a residual sum
/// that also feeds the rest of the model) in the same pass.
void layernorm_backward_typed(float* dx, float* dweight, float* dbias, const float* dout, const void* x,
                              ElemType x_type, const float* weight, const float* mean, const float* rstd,
                              const float* dresidual, int64_t n, int64_t c, float* workspace, cudaStream_t stream);

/// RMS normalisation (rmsnorm.cu): x (N, C), weight (C) -> out (N, C) = x * rstd * weight, rstd (N)
/// = rsqrt(mean(x²) + eps) saved. Backward writes dx (N, C) and dweight (C) (null to skip).
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int64_t n, int64_t c,
                     float eps, cudaStream_t stream);
/// Floats of workspace rmsnorm_backward needs.
int64_t rmsnorm_backward_workspace(int64_t n, int64_t c);
void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x, const float* weight,
                      const float* rstd, int64_t n, int64_t c, float* workspace, cudaStream_t stream);
/// As add_layernorm_forward for the RMS norm: sum = x + y, out = rms_norm(sum), rstd (N); y and
/// sum null for a plain rms_norm with typed input and output.
void add_rmsnorm_forward(void* sum, ElemType sum_type, void* out, ElemType out_type, float* rstd, const void* x,
                         ElemType x_type, const void* y, ElemType y_type, const float* weight, int64_t n, int64_t c,
                         float eps, cudaStream_t stream);
/// As layernorm_backward_typed: x f32 or bf16, optional dresidual added into dx.
void rmsnorm_backward_typed(float* dx, float* dweight, const float* dout, const void* x, ElemType x_type,
                            const float* weight, const float* rstd, const float* dresidual, int64_t n, int64_t c,
                            float* workspace, cudaStream_t stream);
/// Rotary embedding (rotary.cu), rotate_half pairs (d, d + HS/2): x (B, NH, T, HS) at element strides
/// (stride_b, stride_h, stride_t, 1) -> out (B, NH, T, HS) contiguous; cos, sin (L, HS/2), row
/// offset + t. sin_sign -1 gives the inverse rotation (the backward).
void rotary_apply(float* out, const float* x, const float* cos, const float* sin, int64_t b, int64_t nh,
                  int64_t t, int64_t hs, int64_t stride_b, int64_t stride_h, int64_t stride_t, int64_t offset,
                  float sin_sign, cudaStream_t stream);
/// rotary_apply with x and out each f32 or bf16 storage (f32 math; a bf16 x read in place).
void rotary_apply_typed(void* out, ElemType out_type, const void* x, ElemType x_type, const float* cos,
                        const float* sin, int64_t b, int64_t nh, int64_t t, int64_t hs, int64_t stride_b,
                        int64_t stride_h, int64_t stride_t, int64_t offset, float sin_sign, cudaStream_t stream);
/// SwiGLU gate (swiglu.cu): out (N) = silu(gate) * up; backward dgate, dup (N) (null to skip).
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n, cudaStream_t stream);
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n,
                     cudaStream_t stream);
/// The same with gate, up and out each f32 or bf16 storage (f32 math in registers); dout and the
/// gradients stay f32.
void swiglu_forward_typed(void* out, ElemType out_type, const void* gate, ElemType gate_type, const void* up,
                          ElemType up_type, int64_t n, cudaStream_t stream);
void swiglu_backward_typed(float* dgate, float* dup, const float* dout, const void* gate, ElemType gate_type,
                           const void* up, ElemType up_type, int64_t n, cudaStream_t stream);
/// out (N) = gelu(x) (tanh approximation); dx (N) = dout * gelu'(x).
void gelu_forward(float* out, const float* x, int64_t n, cudaStream_t stream);
void gelu_backward(float* dx, const float* dout, const float* x, int64_t n, cudaStream_t stream);
/// The same with x and out each f32 or bf16 storage (f32 math); dout and dx stay f32.
void gelu_forward_typed(void* out, ElemType out_type, const void* x, ElemType x_type, int64_t n,
                        cudaStream_t stream);
void gelu_backward_typed(float* dx, const float* dout, const void* x, ElemType x_type, int64_t n,
                         cudaStream_t stream);
/// The backward of linear + GELU after the product: dpre (rows, cols) = dout * gelu'(pre), pre f32
/// or bf16 (the forward's saved pre-activation, read in place), and, when dbias is not null,
/// dbias (cols) = column sums of dpre, written or added (accumulate), deterministic through
/// `workspace` (gelu_bias_backward_workspace floats).
int64_t gelu_bias_backward_workspace(int64_t rows, int64_t cols);
void gelu_bias_backward(float* dpre, float* dbias, const float* dout, const void* pre, ElemType pre_type,
                        int64_t rows, int64_t cols, bool accumulate, float* workspace, cudaStream_t stream);

/// y (N, C) = softmax of each row of x; dx = y * (dy - sum(dy * y)).
void softmax_forward(float* y, const float* x, int64_t n, int64_t c, cudaStream_t stream);
void softmax_backward(float* dx, const float* dy, const float* y, int64_t n, int64_t c, cudaStream_t stream);

/// logits (N, V), targets (N) -> losses (N) (0 on ignored rows), lse (N); then
/// loss[0] = sum(losses) / count and count[0] = number of rows not ignored (as float), both on the
/// device (0 when every row is ignored).
void cross_entropy_forward(float* loss, float* count, float* losses, float* lse, const float* logits,
                           const int32_t* targets, int64_t n, int64_t v, int32_t ignore_index,
                           cudaStream_t stream);
/// dlogits (N, V) = (softmax - onehot) * dloss[0] / count[0]; 0 on ignored rows or when count is 0.
void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            const float* dloss, const float* count, int64_t n, int64_t v,
                            int32_t ignore_index, cudaStream_t stream);
/// Both passes with the logits f32 or bf16 storage, read in place (f32 math; everything else f32).
void cross_entropy_forward_typed(float* loss, float* count, float* losses, float* lse, const void* logits,
                                 ElemType logits_type, const int32_t* targets, int64_t n, int64_t v,
                                 int32_t ignore_index, cudaStream_t stream);
void cross_entropy_backward_typed(float* dlogits, const void* logits, ElemType logits_type, const float* lse,
                                  const int32_t* targets, const float* dloss, const float* count, int64_t n,
                                  int64_t v, int32_t ignore_index, cudaStream_t stream);

/// out (N) = x * keep / (1 - p), keep = philox_uniform(seed, base + i) >= p (bit-identical to
/// lmf::philox_uniform on the CPU). Also the backward (x = dout).
void dropout_apply(float* out, const float* x, int64_t n, float p, uint64_t seed, uint64_t base,
                   cudaStream_t stream);
/// dropout_apply with x and out each f32 or bf16 storage (the kept values scaled in f32, rounded once).
void dropout_apply_typed(void* out, ElemType out_type, const void* x, ElemType x_type, int64_t n, float p,
                         uint64_t seed, uint64_t base, cudaStream_t stream);

/// AdamW on elements [0, n) of the slabs: m, v moments, p updated in place; decay_factor = 1 - lr·wd.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float decay_factor, float lr,
                  float beta1, float beta2, float eps, float bias_correction1,
                  float bias_correction2_sqrt, cudaStream_t stream);

// --- matrix products (matmul.cu) -------------------------------------------------------------------
/// custom: the mma.sync kernel (sm_80+); cublas: cuBLASLt (cached plan per shape); wgmma: the Hopper
/// kernel (matmul_sm90.cu), which falls back to custom where gemm_wgmma_available() or
/// gemm_wgmma_supports() says no.
enum class MatmulBackend : int { custom = 0, cublas = 1, wgmma = 2 };
/// Operands of the tensor-core GEMM: c[b] (M, N) = a[b] (M, K) · b[b] (N, K)ᵀ (+ bias (N))
/// (then GELU) (then + residual) (then += into c when accumulate). a and b are bf16, K-contiguous
/// ("NT"). The custom (mma.sync) kernel predicates every edge (rows beyond M or N and columns beyond
/// K are read as zeros), so operands need no padding: lda, ldb and the batch strides multiples of 8
/// and a, b 16-byte aligned (the 16-byte cp.async rows). cuBLASLt takes any lda, ldb >= K. The
/// wgmma backend has the custom kernel's rules (TMA zero-fills outside the operands). A layout padded
/// to kGemmRowPad rows and a K multiple of kGemmKPad (what pack_bf16 wrote before) still works.
/// c is f32 (c_f32) or bf16 (c_bf16), exactly one non-null, leading dimension ldc; only the M x N
/// block is written. With gelu, aux_f32 or aux_bf16 (c's layout) may also receive the
/// pre-activation (the product plus bias), which the GELU's backward needs: one pass writes both.
constexpr int kGemmRowPad = 128;
constexpr int kGemmKPad = 32;
struct GemmParams {
  const bf16_t* a = nullptr;
  const bf16_t* b = nullptr;
  float* c_f32 = nullptr;
  bf16_t* c_bf16 = nullptr;
  const float* bias = nullptr;  ///< (N) or null
  const float* residual = nullptr;  ///< f32, c's layout (ldc, stride_c), added last; or null
  float* aux_f32 = nullptr;  ///< with gelu: the pre-activation, c's layout; or null
  bf16_t* aux_bf16 = nullptr;  ///< the same in bf16 (at most one of aux_f32, aux_bf16)
  int64_t m = 0, n = 0, k = 0;  ///< true sizes; k already padded is fine (zeros add nothing)
  int64_t lda = 0, ldb = 0, ldc = 0;  ///< elements; lda, ldb >= K
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  ///< between batch elements (0 shares)
  int64_t batch = 1;
  bool gelu = false;
  bool accumulate = false;  ///< not combined with bias, gelu or aux
};
void gemm(const GemmParams& params, MatmulBackend backend, cudaStream_t stream);
/// Whether the custom (mma.sync) kernel, and so every backend, can read a and b in place: 16-byte
/// aligned, lda, ldb and the batch strides multiples of 8, lda, ldb >= K. (cuBLASLt alone needs
/// only lda, ldb >= K.)
bool gemm_custom_supports(const GemmParams& params);
/// True when this build holds the sm_90a kernel (LMF_CUDA_ARCHITECTURES has 90a) and the current
/// device is compute capability 9.0.
bool gemm_wgmma_available();
/// Whether the wgmma kernel can take these operands (alignment and stride rules above, sizes
/// under 2^31, grid limits).
bool gemm_wgmma_supports(const GemmParams& params);
/// The wgmma kernel directly (no fallback; throws when the operands break its rules). Only on a
/// device where gemm_wgmma_available() is true.
void gemm_wgmma(const GemmParams& params, cudaStream_t stream);
/// out[b] (rows_pad, cols_pad) bf16 = in[b*sb + r*sr + c*sc] (f32) for r < rows, c < cols, else 0.
/// Turns any transpose of an f32 operand into the K-contiguous, padded bf16 layout gemm reads.
void pack_bf16(bf16_t* out, const float* in, int64_t batch, int64_t rows, int64_t cols,
               int64_t rows_pad, int64_t cols_pad, int64_t sb, int64_t sr, int64_t sc,
               cudaStream_t stream);
/// Same from a bf16 source (benchmarks start from bf16).
void pack_bf16_from_bf16(bf16_t* out, const bf16_t* in, int64_t batch, int64_t rows, int64_t cols,
                         int64_t rows_pad, int64_t cols_pad, int64_t sb, int64_t sr, int64_t sc,
                         cudaStream_t stream);

// --- attention (attention.cu) ----------------------------------------------------------------------
/// Causal flash attention, f32 in and out, f32 math. q, out (B, NH, Tq, HS), k, v (B, NKV, Tk, HS),
/// all contiguous; lse (B, NH, Tq). Query head h reads key/value head h / (NH / NKV); query i
/// sees keys [0, Tk - Tq + i]. HS <= 128 (kernels for HS_MAX 64 and 128, smaller HS zero-padded).
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int64_t b,
                       int64_t nh, int64_t nkv, int64_t tq, int64_t tk, int64_t hs, cudaStream_t stream);
/// Floats of workspace attention_backward needs (the per-row dot(dout, out)).
int64_t attention_backward_workspace(int64_t bh, int64_t t);
/// dq, dk, dv (BH, T, HS), written (NH == NKV, Tq == Tk only). Recomputes the probabilities from
/// lse block by block.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* q, const float* k, const float* v, const float* lse, int64_t bh,
                        int64_t t, int64_t hs, float* workspace, cudaStream_t stream);

// --- tensor-core flash attention (flash_attention.cu) ----------------------------------------------
/// Causal scaled-dot-product attention on tensor cores: bf16 q, k, v, f32 accumulation, online
/// softmax. Tensors are addressed by explicit element strides (batch, time, head; the head dim is
/// contiguous and every stride a multiple of 8), so both (B, T, NH, HS) slices of a fused qkv
/// buffer and (B, NH, T, HS) tensors work without copies. Grouped-query heads: query head h reads
/// K/V head h / (NH / NKV). HS must be 64 or 128; T is any length >= 1.
struct FlashAttentionParams {
  const bf16_t* q = nullptr;  ///< (B, T, NH, HS) by strides
  const bf16_t* k = nullptr;  ///< (B, T, NKV, HS) by strides
  const bf16_t* v = nullptr;  ///< (B, T, NKV, HS) by strides
  bf16_t* o = nullptr;        ///< (B, T, NH, HS) by strides; written
  float* lse = nullptr;       ///< (B, NH, T) contiguous, natural-log sum of exp of the scaled scores
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  int64_t o_batch_stride = 0, o_row_stride = 0, o_head_stride = 0;
  int batch = 0, heads = 0, kv_heads = 0, seq = 0, head_dim = 0;
  float scale = 0.f;  ///< usually 1 / sqrt(HS)
};
/// The backward's extra operands: dout like o; dq (B, T, NH, HS), dk, dv (B, T, NKV, HS) f32, by
/// strides, written. dk, dv sum over the query heads of their group (no atomics: one block owns a
/// K/V tile); dq sums over key tiles with f32 atomics into `workspace`, so its last bits can vary
/// run to run (docs/kernels.md).
struct FlashAttentionBackwardParams {
  FlashAttentionParams fwd;  ///< q, k, v, o (the forward's output), lse (the forward's), sizes
  const bf16_t* dout = nullptr;
  int64_t do_batch_stride = 0, do_row_stride = 0, do_head_stride = 0;
  float* dq = nullptr;
  float* dk = nullptr;
  float* dv = nullptr;
  int64_t dq_batch_stride = 0, dq_row_stride = 0, dq_head_stride = 0;
  int64_t dk_batch_stride = 0, dk_row_stride = 0, dk_head_stride = 0;
  int64_t dv_batch_stride = 0, dv_row_stride = 0, dv_head_stride = 0;
  float* workspace = nullptr;  ///< flash_attention_backward_workspace floats
};
/// Floats of workspace the backward needs: D = rowsum(dO * O) (B·NH·T) and the f32 dq sum (B·NH·T·HS).
int64_t flash_attention_backward_workspace(int batch, int heads, int seq, int head_dim);
void flash_attention_forward(const FlashAttentionParams& params, cudaStream_t stream);
void flash_attention_backward(const FlashAttentionBackwardParams& params, cudaStream_t stream);

// --- primitive ops (primitives.cu) -----------------------------------------------------------------
// The contracts of lmf::cpu::broadcast_binary ... gather_backward (src/backend/cpu/cpu_kernels.h),
// stream last. Formulas from common/op_table.h; deterministic (no atomics).
void broadcast_binary(BinaryOp op, float* out, const float* a, const float* b, const BroadcastLayout& layout,
                      cudaStream_t stream);
void broadcast_binary_backward(BinaryOp op, float* ga, float* gb, const float* g, const float* a, const float* b,
                               const BroadcastLayout& layout, cudaStream_t stream);
/// The two above with a, b (and the forward's out) each f32 or bf16 storage, f32 math; g, ga, gb f32.
void broadcast_binary_typed(BinaryOp op, void* out, ElemType out_type, const void* a, ElemType a_type,
                            const void* b, ElemType b_type, const BroadcastLayout& layout, cudaStream_t stream);
void broadcast_binary_backward_typed(BinaryOp op, float* ga, float* gb, const float* g, const void* a,
                                     ElemType a_type, const void* b, ElemType b_type, const BroadcastLayout& layout,
                                     cudaStream_t stream);
void sum_to(float* out, const float* in, const ReduceLayout& layout, cudaStream_t stream);
void unary_forward(UnaryOp op, float* out, const float* x, float p, int64_t n, cudaStream_t stream);
void unary_backward(UnaryOp op, float* dx, const float* dout, const float* x, const float* y, float p, int64_t n,
                    cudaStream_t stream);
/// The two above with x, out (and y) all f32 or all bf16 storage (`type`), f32 math; dout, dx f32.
void unary_forward_typed(UnaryOp op, void* out, const void* x, ElemType type, float p, int64_t n, cudaStream_t stream);
void unary_backward_typed(UnaryOp op, float* dx, const float* dout, const void* x, const void* y, ElemType type,
                          float p, int64_t n, cudaStream_t stream);
void max_dim_forward(float* out, int32_t* argmax, const float* x, int64_t outer, int64_t d, int64_t inner,
                     cudaStream_t stream);
void max_dim_backward(float* dx, const float* dout, const int32_t* argmax, int64_t outer, int64_t d,
                      int64_t inner, cudaStream_t stream);
void copy_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t width,
               cudaStream_t stream);
void where_forward(float* out, const float* cond, const float* a, const float* b, const BroadcastLayout& layout,
                   cudaStream_t stream);
void where_backward(float* ga, float* gb, const float* g, const float* cond, const BroadcastLayout& layout,
                    cudaStream_t stream);
void gather_forward(float* out, const float* x, const int32_t* index, int64_t rows, int64_t n, int64_t k,
                    cudaStream_t stream);
void gather_backward(float* dx, const float* dout, const int32_t* index, int64_t rows, int64_t n, int64_t k,
                     cudaStream_t stream);
// --- end primitive ops -----------------------------------------------------------------------------

}  // namespace lmf::kernels
