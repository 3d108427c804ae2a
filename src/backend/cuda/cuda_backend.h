// The CUDA entry points of lmforge's ops: raw device pointers and sizes in, like cpu_kernels.h, plus
// the device so each call runs on the right GPU and can take workspace from that device's caching
// allocator. Implemented in src/backend/cuda/*.cpp on top of kernels/; in a build without CUDA every
// function here is an inline stub that throws one clear lmf::Error, so the op layer needs no #ifdefs.
// Dim letters: B batch, T time, C channels, NH heads, HS head size, V vocabulary, N rows.
// Gradient rule: activation grads are written (=). Every entry point takes the arguments of its
// cpu_kernels.h namesake, after the device; those that can fuse an accumulation take `accumulate`
// (+=), which the autograd engine asks for when the destination is a parameter's gradient.
#pragma once
#include <cstdint>

#include "lmforge/core/compute.h"
#include "lmforge/core/device.h"
#include "lmforge/core/dtype.h"
#include "lmforge/core/error.h"
// Relative, so every target that sees src/ finds the op table shared with the CPU kernels.
#include "../../../kernels/common/op_table.h"
#include "../../../kernels/common/step_control.h"

#ifdef LMF_WITH_CUDA
#define LMF_CUDA_ENTRY(signature) signature;
#else
#define LMF_CUDA_ENTRY(signature) \
  [[noreturn]] inline signature { throw ::lmf::Error("CUDA backend not available in this build"); }
#endif

namespace lmf::cuda {

// --- elementwise and reductions (elementwise.cpp) ---------------------------------------------------
// a, out (N); b (NB) read as b[i % NB].
LMF_CUDA_ENTRY(void scale_forward(Device device, float* out, const float* a, float factor, int64_t n))
/// add, sub or mul (op, not div) with a, b, out each f32 or bf16 (their dtypes) read and written in
/// place, f32 math: cpu::add_forward/sub_forward/mul_forward with the dtypes added (the CPU widens a
/// bf16 operand first). mul's backward with a, b so typed: da (N) = dout * b, db (NB) = sum over the
/// broadcast of dout * a, either may be null (dout, da, db f32).
LMF_CUDA_ENTRY(void binary_forward_typed(Device device, kernels::BinaryOp op, void* out, DType out_dtype,
                                         const void* a, DType a_dtype, const void* b, DType b_dtype, int64_t n,
                                         int64_t nb))
LMF_CUDA_ENTRY(void mul_backward_typed(Device device, float* da, float* db, const float* dout, const void* a,
                                       DType a_dtype, const void* b, DType b_dtype, int64_t n, int64_t nb))
/// out (cols) = factor * sum over rows of in (rows, cols), or += when accumulate; deterministic.
LMF_CUDA_ENTRY(void column_sums(Device device, const float* in, float* out, int64_t rows, int64_t cols,
                                float factor = 1.f, bool accumulate = false))
/// dst (N) += alpha * src.
LMF_CUDA_ENTRY(void add_inplace(Device device, float* dst, const float* src, float alpha, int64_t n))
/// out[0] = factor * sum of x (N) (of x² when square), computed and kept on the device.
LMF_CUDA_ENTRY(void sum_all(Device device, float* out, const float* x, int64_t n, float factor, bool square))
/// x (OUTER, D, INNER) -> out (OUTER, INNER) = factor * sum over D, and its backward.
LMF_CUDA_ENTRY(void sum_dim_forward(Device device, float* out, const float* x, int64_t outer, int64_t d,
                                    int64_t inner, float factor))
LMF_CUDA_ENTRY(void sum_dim_backward(Device device, float* dx, const float* dout, int64_t outer, int64_t d,
                                     int64_t inner, float factor))
/// out (N) = factor * scalar[0] (scalar on the device).
LMF_CUDA_ENTRY(void broadcast_scalar(Device device, float* out, const float* scalar, float factor, int64_t n))

// --- matrix products (matmul.cpp) -------------------------------------------------------------------
/// c (M, N) = op(a) · op(b) (+= when accumulate), the same contract as cpu::gemm (gelu_out too:
/// without accumulate the GEMM's epilogue writes c and gelu(c) in one pass); f32 operands are packed
/// to bf16 and multiplied on tensor cores with fp32 accumulation, by the custom kernel, cuBLASLt or
/// the Hopper kernel per options.matmul_backend.
LMF_CUDA_ENTRY(void gemm(Device device, const float* a, const float* b, float* c, int64_t m, int64_t n,
                         int64_t k, bool trans_a, bool trans_b, bool accumulate = false, float* gelu_out = nullptr,
                         const ComputeOptions& options = ComputeOptions{}))
/// `batch` products with element strides between matrices (0 shares an operand), as cpu::gemm_batched.
LMF_CUDA_ENTRY(void gemm_batched(Device device, int64_t batch, const float* a, int64_t stride_a, const float* b,
                                 int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n,
                                 int64_t k, bool trans_a, bool trans_b, bool accumulate = false,
                                 float* gelu_out = nullptr, const ComputeOptions& options = ComputeOptions{}))
/// gemm_batched with each operand f32 or bf16 (its dtype): a bf16 operand whose op() leaves it
/// K-contiguous (a not transposed, b transposed) with K a multiple of 8 is read in place, any other
/// is packed to bf16 first. c stays f32.
LMF_CUDA_ENTRY(void gemm_batched_typed(Device device, int64_t batch, const void* a, DType a_dtype, int64_t stride_a,
                                       const void* b, DType b_dtype, int64_t stride_b, float* c, int64_t stride_c,
                                       int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b,
                                       bool accumulate = false, float* gelu_out = nullptr,
                                       const ComputeOptions& options = ComputeOptions{}))
/// out (N, OUT) = x (N, IN) · w (OUT, IN)ᵀ + bias (OUT), x and w f32 or bf16 (bf16 read in place
/// when IN is a multiple of 8: no per-call packing of a weight's bf16 copy or a bf16 activation),
/// out f32 or bf16 (out_dtype, rounded once from the f32 accumulator). With pre not null:
/// out = gelu(x wᵀ + b) and pre = x wᵀ + b (out's dtype), both from one epilogue pass.
LMF_CUDA_ENTRY(void linear_forward_typed(Device device, void* out, void* pre, DType out_dtype, const void* x,
                                         DType x_dtype, const void* w, DType w_dtype, const float* bias, int64_t n,
                                         int64_t out_features, int64_t in_features,
                                         const ComputeOptions& options = ComputeOptions{}))
/// out (N, OUT) = x (N, IN) · w (OUT, IN)ᵀ + bias (OUT) (bias may be null), bias fused in the
/// epilogue; with gelu_out, also gelu_out (N, OUT) = gelu(out). As cpu::linear_forward.
LMF_CUDA_ENTRY(void linear_forward(Device device, float* out, const float* x, const float* w, const float* bias,
                                   int64_t n, int64_t out_features, int64_t in_features, float* gelu_out = nullptr,
                                   const ComputeOptions& options = ComputeOptions{}))

// --- model ops (model_ops.cpp) ----------------------------------------------------------------------
/// As cpu::check_ids_i32: throws lmf::Error "<what> <id> at position <i> is outside the vocabulary
/// of size <V>" for the first id outside [0, V) (ids equal to `allowed` pass). Reads one value back
/// to the host: a synchronisation, the price of a clear error for a bad data file.
LMF_CUDA_ENTRY(void check_ids_i32(Device device, const char* what, const int32_t* ids, int64_t n, int64_t v,
                                  int32_t allowed))
LMF_CUDA_ENTRY(void check_ids_u16(Device device, const char* what, const uint16_t* ids, int64_t n, int64_t v))
LMF_CUDA_ENTRY(void embedding_forward_i32(Device device, float* out, const float* weight, const int32_t* ids,
                                          int64_t n, int64_t c))
LMF_CUDA_ENTRY(void embedding_forward_u16(Device device, float* out, const float* weight, const uint16_t* ids,
                                          int64_t n, int64_t c))
/// dweight (V, C) = scatter-sum of dout (N, C) by ids: written (zeroed first), or added to when
/// accumulate; deterministic (sorted ids, one owner per row).
LMF_CUDA_ENTRY(void embedding_backward_i32(Device device, float* dweight, const float* dout, const int32_t* ids,
                                           int64_t n, int64_t c, int64_t v, bool accumulate = false))
LMF_CUDA_ENTRY(void embedding_backward_u16(Device device, float* dweight, const float* dout, const uint16_t* ids,
                                           int64_t n, int64_t c, int64_t v, bool accumulate = false))
LMF_CUDA_ENTRY(void layer_norm_forward(Device device, float* out, float* mean, float* rstd, const float* x,
                                       const float* weight, const float* bias, int64_t n, int64_t c, float eps))
LMF_CUDA_ENTRY(void layer_norm_backward(Device device, float* dx, float* dweight, float* dbias, const float* dout,
                                        const float* x, const float* weight, const float* mean,
                                        const float* rstd, int64_t n, int64_t c))
/// Residual add fused with the layer norm after it: sum (N, C) = x + y, out (N, C) =
/// layer_norm(sum), mean and rstd (N) f32, in one pass per row; x, y, sum, out f32 or bf16 (their
/// dtypes). y and sum null: layer_norm of x, reading and writing the given dtypes (no widening copy).
LMF_CUDA_ENTRY(void add_layer_norm_forward(Device device, void* sum, DType sum_dtype, void* out, DType out_dtype,
                                           float* mean, float* rstd, const void* x, DType x_dtype, const void* y,
                                           DType y_dtype, const float* weight, const float* bias, int64_t n,
                                           int64_t c, float eps))
/// layer_norm_backward with the saved input x read as f32 or bf16 in place.
LMF_CUDA_ENTRY(void layer_norm_backward_typed(Device device, float* dx, float* dweight, float* dbias,
                                              const float* dout, const void* x, DType x_dtype, const float* weight,
                                              const float* mean, const float* rstd, int64_t n, int64_t c))
/// The RMS-norm namesakes of the two above.
LMF_CUDA_ENTRY(void add_rms_norm_forward(Device device, void* sum, DType sum_dtype, void* out, DType out_dtype,
                                         float* rstd, const void* x, DType x_dtype, const void* y, DType y_dtype,
                                         const float* weight, int64_t n, int64_t c, float eps))
LMF_CUDA_ENTRY(void rms_norm_backward_typed(Device device, float* dx, float* dweight, const float* dout,
                                            const void* x, DType x_dtype, const float* weight, const float* rstd,
                                            int64_t n, int64_t c))
/// As cpu::rms_norm_forward / rms_norm_backward / rotary_apply / swiglu_forward / swiglu_backward.
LMF_CUDA_ENTRY(void rms_norm_forward(Device device, float* out, float* rstd, const float* x, const float* weight,
                                     int64_t n, int64_t c, float eps))
LMF_CUDA_ENTRY(void rms_norm_backward(Device device, float* dx, float* dweight, const float* dout, const float* x,
                                      const float* weight, const float* rstd, int64_t n, int64_t c))
LMF_CUDA_ENTRY(void rotary_apply(Device device, float* out, const float* x, const float* cos, const float* sin,
                                 int64_t b, int64_t nh, int64_t t, int64_t hs, int64_t stride_b, int64_t stride_h,
                                 int64_t stride_t, int64_t offset, float sin_sign))
LMF_CUDA_ENTRY(void gelu_backward(Device device, float* dx, const float* dout, const float* x, int64_t n))
// The native-bf16 forms of rotary_apply, cpu::swiglu_*, cpu::gelu_*: activations (x, gate, up, out) f32 or
// bf16 storage, each by its dtype, read and written in place with f32 math in registers (no widened
// copy); upstream gradients and the gradients written stay f32.
LMF_CUDA_ENTRY(void rotary_apply_typed(Device device, void* out, DType out_dtype, const void* x, DType x_dtype,
                                       const float* cos, const float* sin, int64_t b, int64_t nh, int64_t t,
                                       int64_t hs, int64_t stride_b, int64_t stride_h, int64_t stride_t,
                                       int64_t offset, float sin_sign))
LMF_CUDA_ENTRY(void swiglu_forward_typed(Device device, void* out, DType out_dtype, const void* gate,
                                         DType gate_dtype, const void* up, DType up_dtype, int64_t n))
LMF_CUDA_ENTRY(void swiglu_backward_typed(Device device, float* dgate, float* dup, const float* dout,
                                          const void* gate, DType gate_dtype, const void* up, DType up_dtype,
                                          int64_t n))
LMF_CUDA_ENTRY(void gelu_forward_typed(Device device, void* out, DType out_dtype, const void* x, DType x_dtype,
                                       int64_t n))
LMF_CUDA_ENTRY(void gelu_backward_typed(Device device, float* dx, const float* dout, const void* x, DType x_dtype,
                                        int64_t n))
/// linear_gelu's backward before the products: dpre (rows, cols) = dout * gelu'(pre) with pre f32
/// or bf16 read in place, and dbias (cols, null to skip) = column sums of dpre (+= when
/// accumulate), in one pass over dout.
LMF_CUDA_ENTRY(void gelu_bias_backward(Device device, float* dpre, float* dbias, const float* dout, const void* pre,
                                       DType pre_dtype, int64_t rows, int64_t cols, bool accumulate))
LMF_CUDA_ENTRY(void softmax_forward(Device device, float* y, const float* x, int64_t n, int64_t c))
LMF_CUDA_ENTRY(void softmax_backward(Device device, float* dx, const float* dy, const float* y, int64_t n,
                                     int64_t c))
/// out, lse as cpu::attention_forward, all operands contiguous (f32 kernel, CUDA cores); the
/// backward (NH == NKV, Tq == Tk only: the op expands grouped K/V heads first) also needs the
/// forward's output `out`.
LMF_CUDA_ENTRY(void attention_forward(Device device, float* out, float* lse, const float* q, const float* k,
                                      const float* v, int64_t b, int64_t nh, int64_t nkv, int64_t tq, int64_t tk,
                                      int64_t hs))
LMF_CUDA_ENTRY(void attention_backward(Device device, float* dq, float* dk, float* dv, const float* dout,
                                       const float* out, const float* q, const float* k, const float* v,
                                       const float* lse, int64_t bh, int64_t t, int64_t hs))

/// Element strides of a (B, T, heads, HS) flash-attention operand; the head dim is contiguous.
/// Strides of size-1 dims may be 0. All must be multiples of 8 elements (16 bytes of bf16).
struct HeadStrides {
  int64_t batch = 0, row = 0, head = 0;
};
/// The operands the tensor-core flash kernel shares between forward and backward: bf16 q
/// (B, T, NH, HS), k, v (B, T, NKV, HS) and o (B, T, NH, HS), each by its strides and passed as raw
/// bf16 storage (16-byte aligned); lse (B, NH, T) f32 contiguous. Query head h reads K/V head
/// h / (NH / NKV) in place.
struct FlashOperands {
  int64_t b = 0, nh = 0, nkv = 0, t = 0, hs = 0;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;
  HeadStrides q_s, k_s, v_s, o_s;
};
/// Whether causal attention with these sizes runs on the flash kernel on `device`: the chosen
/// backend (the LMF_ATTENTION environment variable, flash|f32, read once, overrides `backend`) is
/// flash, HS is 64 or 128, Tq == Tk, and the device is compute capability 8.0 or later.
LMF_CUDA_ENTRY(bool flash_attention_usable(Device device, AttentionBackend backend, int64_t hs, int64_t tq,
                                           int64_t tk))
/// Writes ops.o (bf16) and ops.lse. Throws lmf::Error naming the limit a size, stride or alignment breaks.
LMF_CUDA_ENTRY(void flash_attention_forward(Device device, const FlashOperands& ops))
/// dq (B, T, NH, HS), dk, dv (B, T, NKV, HS) f32 by strides, written; dk and dv are summed over the
/// query heads of each group by the kernel. dout (bf16) is laid out like o. dq's last bits can vary
/// run to run (f32 atomics across key tiles, docs/kernels.md).
LMF_CUDA_ENTRY(void flash_attention_backward(Device device, const FlashOperands& ops, float* dq, HeadStrides dq_s,
                                             float* dk, HeadStrides dk_s, float* dv, HeadStrides dv_s,
                                             const void* dout, HeadStrides do_s))
/// As cpu::cross_entropy_forward: loss[0] = mean row loss over rows not ignored, count[0] = their
/// number (f32), lse (N); all on the device. Targets must have been checked.
LMF_CUDA_ENTRY(void cross_entropy_forward(Device device, float* loss, float* count, float* lse,
                                          const float* logits, const int32_t* targets, int64_t n, int64_t v,
                                          int32_t ignore_index))
/// dlogits (N, V) = (softmax - onehot) * dloss[0] / count[0] (dloss, count on the device).
LMF_CUDA_ENTRY(void cross_entropy_backward(Device device, float* dlogits, const float* logits, const float* lse,
                                           const int32_t* targets, const float* dloss, const float* count,
                                           int64_t n, int64_t v, int32_t ignore_index))
/// Both passes with the logits f32 or bf16 (logits_dtype), read in place: bf16 logits are never
/// widened to an (N, V) f32 copy.
LMF_CUDA_ENTRY(void cross_entropy_forward_typed(Device device, float* loss, float* count, float* lse,
                                                const void* logits, DType logits_dtype, const int32_t* targets,
                                                int64_t n, int64_t v, int32_t ignore_index))
LMF_CUDA_ENTRY(void cross_entropy_backward_typed(Device device, float* dlogits, const void* logits,
                                                 DType logits_dtype, const float* lse, const int32_t* targets,
                                                 const float* dloss, const float* count, int64_t n, int64_t v,
                                                 int32_t ignore_index))
/// cpu::dropout_apply with x and out f32 or bf16 (their dtypes), read and written in place.
LMF_CUDA_ENTRY(void dropout_apply_typed(Device device, void* out, DType out_dtype, const void* x, DType x_dtype,
                                        int64_t n, float p, uint64_t seed, uint64_t base))

// --- primitive ops: broadcasting, unary table, max, cat/where/gather (primitives.cpp) -------------
// The same names and arguments as lmf::cpu:: (see cpu_kernels.h for each contract), Device first;
// a `_typed` form adds each storage operand's dtype (f32 or bf16, read in place).
/// cpu::broadcast_binary and its backward with a, b, out each f32 or bf16 (their dtypes), f32 math;
/// g, ga, gb f32.
LMF_CUDA_ENTRY(void broadcast_binary_typed(Device device, kernels::BinaryOp op, void* out, DType out_dtype,
                                           const void* a, DType a_dtype, const void* b, DType b_dtype,
                                           const kernels::BroadcastLayout& layout))
LMF_CUDA_ENTRY(void broadcast_binary_backward_typed(Device device, kernels::BinaryOp op, float* ga, float* gb,
                                                    const float* g, const void* a, DType a_dtype, const void* b,
                                                    DType b_dtype, const kernels::BroadcastLayout& layout))
LMF_CUDA_ENTRY(void sum_to(Device device, float* out, const float* in, const kernels::ReduceLayout& layout))
LMF_CUDA_ENTRY(void unary_forward(Device device, kernels::UnaryOp op, float* out, const float* x, float p,
                                  int64_t n))
LMF_CUDA_ENTRY(void unary_backward(Device device, kernels::UnaryOp op, float* dx, const float* dout,
                                   const float* x, const float* y, float p, int64_t n))
/// The two above with x, out and y all f32 or all bf16 (dtype), read and written in place.
LMF_CUDA_ENTRY(void unary_forward_typed(Device device, kernels::UnaryOp op, void* out, const void* x, DType dtype,
                                        float p, int64_t n))
LMF_CUDA_ENTRY(void unary_backward_typed(Device device, kernels::UnaryOp op, float* dx, const float* dout,
                                         const void* x, const void* y, DType dtype, float p, int64_t n))
LMF_CUDA_ENTRY(void max_dim_forward(Device device, float* out, int32_t* argmax, const float* x, int64_t outer,
                                    int64_t d, int64_t inner))
LMF_CUDA_ENTRY(void max_dim_backward(Device device, float* dx, const float* dout, const int32_t* argmax,
                                     int64_t outer, int64_t d, int64_t inner))
LMF_CUDA_ENTRY(void copy_rows(Device device, float* dst, int64_t dst_stride, const float* src,
                              int64_t src_stride, int64_t rows, int64_t width))
LMF_CUDA_ENTRY(void where_forward(Device device, float* out, const float* cond, const float* a, const float* b,
                                  const kernels::BroadcastLayout& layout))
LMF_CUDA_ENTRY(void where_backward(Device device, float* ga, float* gb, const float* g, const float* cond,
                                   const kernels::BroadcastLayout& layout))
LMF_CUDA_ENTRY(void gather_forward(Device device, float* out, const float* x, const int32_t* index,
                                   int64_t rows, int64_t n, int64_t k))
LMF_CUDA_ENTRY(void gather_backward(Device device, float* dx, const float* dout, const int32_t* index,
                                    int64_t rows, int64_t n, int64_t k))
// --- end primitive ops ------------------------------------------------------------------------------
// --- optimizer (model_ops.cpp) ------------------------------------------------------------------------
/// As cpu::adamw_update, on the device's default stream (after the backward that made g).
LMF_CUDA_ENTRY(void adamw_update(Device device, float* p, const float* g, float* m, float* v, int64_t n,
                                 float decay_factor, float lr, float beta1, float beta2, float eps,
                                 float bias_correction1, float bias_correction2_sqrt))
/// As adamw_update, with the clip factor, skip verdict and bias corrections read on the device from
/// `control` and lr from `scalars` (AdamW's device buffer, kernels::AdamWStepScalars)
/// (kernels::adamw_update_controlled): no value goes back to the host.
LMF_CUDA_ENTRY(void adamw_update_controlled(Device device, float* p, const float* g, float* m, float* v, int64_t n,
                                            float weight_decay, float beta1, float beta2, float eps,
                                            const kernels::StepControl* control, const float* scalars))
/// kernels::step_decide on the device's stream: the record goes to ring[control->decided % capacity].
LMF_CUDA_ENTRY(void step_decide(Device device, kernels::StepControl* control, kernels::StepRecord* ring,
                                int64_t capacity, float max_norm, float beta1, float beta2))

}  // namespace lmf::cuda

#undef LMF_CUDA_ENTRY
