// Differentiable functional ops. Each one checks shapes and dtypes, dispatches on the device and
// records its backward (src/ops/<op>.cpp); the per-device kernels live in src/backend/<device>/.
// Dim letters: B batch, T time, C channels, NH heads, HS head size, V vocabulary, N rows.
// Ops compute in f32. bf16 is mixed precision's storage type (ComputeOptions::mixed_bf16): the
// products, norms, attention, rotary_embedding, gelu, swiglu, dropout, cross_entropy and
// add/sub/mul/div take bf16 inputs, compute in f32 and write bf16 activations (a sum with an f32
// operand is f32); gradients are always f32. The other ops reject bf16 with a clear error (cast first).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "lmforge/autograd.h"
#include "lmforge/core/compute.h"
#include "lmforge/core/tensor.h"

namespace lmf {

// --- elementwise, with NumPy broadcasting -----------------------------------------------------
// Shapes align from the right; each dim must be equal or 1 (a missing leading dim counts as 1); the
// output has the broadcast shape (at most 8 dims when the shapes differ beyond the cases below).
// The gradient of each input is summed over the dims it was broadcast along, back to its own shape.
// b of a's shape, of a suffix of it ((C) or (1, 1, C) over (B, T, C)) or of one element takes the
// contiguous fast path; every other pair ((B, T, 1) * (B, T, C), (1, C) + (R, 1), ...) the strided one.
// add, sub, mul and div take f32 or bf16 operands: the result is bf16 when both are, f32 otherwise,
// computed in f32; gradients are f32. On CUDA bf16 operands are read in place; on the CPU they are
// widened by a recorded cast.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, float factor);

/// x converted to `dtype` (f32 or bf16; round to nearest even into bf16), recorded: the gradient
/// passes through unchanged (gradients are f32 whatever the dtype of the tensor they belong to).
/// x itself when it already has that dtype.
Tensor cast(const Tensor& x, DType dtype);

// --- primitive ops ----------------------------------------------------------------------------
/// a / b with broadcasting; da = g / b, db = -g a / b² (each summed to its input's shape).
Tensor div(const Tensor& a, const Tensor& b);
/// Elementwise unary ops (f32 or bf16, any shape; a bf16 x gives a bf16 result computed in f32, and
/// the gradient, f32, reads that rounded result); their derivatives live in one table shared by the
/// CPU and CUDA kernels (kernels/common/op_table.h). relu'(0) = 0. log, sqrt, rsqrt and pow follow IEEE
/// float for inputs outside their domain (NaN or inf), as PyTorch does.
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
/// 1 / sqrt(x).
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
/// x * sigmoid(x) (SwiGLU's gate).
Tensor silu(const Tensor& x);
Tensor relu(const Tensor& x);
/// x ** exponent; the gradient is exponent * x ** (exponent - 1) (0 for exponent 0).
Tensor pow(const Tensor& x, float exponent);
/// Maximum over dimension `dim` (negative counts from the end); keepdim keeps it with size 1.
/// The gradient goes to one element per output: the first maximum along `dim` (lowest index) on a
/// tie, as torch.max(x, dim) does on the CPU; a NaN counts as the maximum. The dim must not be empty.
Tensor max(const Tensor& x, int dim, bool keepdim = false);
/// Joins tensors along `dim`; all other dims must match. Each input's gradient is its slice of the
/// output's gradient.
Tensor cat(const std::vector<Tensor>& xs, int dim);
/// Views of consecutive pieces of `dim` with the given sizes (which must add up to its size).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim);
/// torch.chunk: pieces of ceil(size / n) along `dim`, the last one smaller; fewer than n pieces when
/// the dim is too short (views).
std::vector<Tensor> chunk(const Tensor& x, int64_t n, int dim);
/// cond ? a : b elementwise, with broadcasting across all three. cond is f32; nonzero means true
/// (0 and -0 false, NaN true). cond gets no gradient; a's is g where cond, b's g elsewhere, each
/// summed to its own shape.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
/// torch.gather along the last dim: x (..., N), index (..., K) of i32 in [0, N) with x's leading dims
/// -> out (..., K) = x[..., index[..., k]]. The backward scatter-adds into dx (a repeated index
/// accumulates), deterministically. dim must name the last dim.
Tensor gather(const Tensor& x, const Tensor& index, int dim = -1);
// --- end primitive ops --------------------------------------------------------------------------

// --- matrix products (Eigen on the CPU) ------------------------------------------------------
/// a (..., M, K) · b (..., K, N) -> (..., M, N), with optional transposes of the last two dims
/// (trans_a: a is (..., K, M); trans_b: b is (..., N, K)). Batch dims must match, or b is 2-D and
/// shared across the batch.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
/// x (..., IN) · w (OUT, IN)ᵀ + b (OUT); b may be undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());
/// gelu(linear(x, w, b)) in one pass: the GELU is the GEMM's epilogue, applied to each output
/// tile while it is in cache; on the CPU the same bits as the two ops. On a GPU the epilogue also
/// stores the pre-activation the backward needs, and the backward computes dGELU and the bias
/// gradient in one pass.
Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());
// matmul, linear and linear_gelu read compute_options() (lmforge/core/compute.h) on the calling
// thread: bf16 products on the CPU, cuBLASLt or the custom kernel on a GPU. Set them with a
// ComputeScope around the work.

// --- model ops --------------------------------------------------------------------------------
/// weight (V, C), ids (...) of i32 or u16 -> (..., C). An id outside [0, V) is an lmf::Error.
Tensor embedding(const Tensor& weight, const Tensor& ids);
/// Normalises the last dim: (x - mean) / sqrt(var + eps) * w + b; w and b (C), b may be undefined.
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps = 1e-5f);
/// {x + y, layer_norm(x + y, w, b)} in one pass over each row, on the CPU and on a GPU (a
/// residual add and the layer norm after it); the same bits and gradients as add followed by
/// layer_norm on the same device. f32 or bf16 inputs: the sum is bf16 only when both are.
std::pair<Tensor, Tensor> add_layer_norm(const Tensor& x, const Tensor& y, const Tensor& w, const Tensor& b,
                                         float eps = 1e-5f);
/// RMS normalisation over the last dim (Hugging Face's LlamaRMSNorm, in f32):
/// x * rsqrt(mean(x²) + eps) * w; w (C). Saves rstd per row for the backward.
Tensor rms_norm(const Tensor& x, const Tensor& w, float eps = 1e-6f);
/// {x + y, rms_norm(x + y, w)} in one pass over each row, on the CPU and on a GPU (a residual
/// add and the norm after it); the same bits and gradients as add followed by rms_norm.
std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& y, const Tensor& w, float eps = 1e-6f);
/// Rotary position embedding with Hugging Face's rotate_half convention: dims d and d + HS/2 of a
/// head form a pair (not interleaved neighbours). x (B, NH, T, HS) in any layout whose last dim is
/// contiguous (so transpose(x, 1, 2) of a (B, T, NH, HS) projection needs no copy); cos, sin
/// (L, HS/2) tables with row p for position p. Position offset + t rotates time step t:
///   out[d] = x[d] cos - x[d + HS/2] sin,  out[d + HS/2] = x[d + HS/2] cos + x[d] sin.
/// Returns a contiguous (B, NH, T, HS). The backward is the inverse rotation; cos and sin get no
/// gradient (they are tables, not parameters). offset + T must not exceed L.
Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t offset = 0);
/// silu(gate) * up, elementwise (the gate of a SwiGLU MLP); gate and up of the same shape.
Tensor swiglu(const Tensor& gate, const Tensor& up);
/// GELU, tanh approximation (GPT-2's gelu_new).
Tensor gelu(const Tensor& x);
/// Softmax over the last dim.
Tensor softmax(const Tensor& x);
/// Causal scaled dot-product attention, scale 1/sqrt(HS): q (B, NH, Tq, HS), k and v (B, NKV, Tk, HS)
/// -> (B, NH, Tq, HS). Grouped-query heads: NKV divides NH and query head h reads K/V head
/// h / (NH / NKV) without copying. Tq <= Tk: the queries are the last Tq positions of the Tk
/// (a KV cache holds the first Tk - Tq), so query i attends to keys [0, Tk - Tq + i].
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v);
/// The f32 matrix-product rate of this machine's CPU in GFLOP/s: the best of `reps` n x n x n
/// f32 products (whatever compute_options() asks for) with the current OpenMP threads (the
/// reference the trainer's MFU is reported against; bench_gemm measures the same with more shapes
/// and OpenBLAS beside it).
double cpu_gemm_gflops(int64_t n = 1024, int reps = 3);
/// Whether CPU matrix products can take bf16 operands here (AVX-512 BF16): where false,
/// ComputeOptions::cpu_matmul_bf16 is ignored.
bool cpu_matmul_bf16_available();
/// GPT self-attention straight from the fused projection: qkv (B, T, 3C), q, k, v side by side, each
/// C = n_head * HS wide -> (B, T, C), the heads' outputs side by side. The same as splitting qkv into
/// heads, attention(q, k, v), and merging the heads back, without the permuting copies.
Tensor causal_self_attention(const Tensor& qkv, int64_t n_head);
/// Mean cross-entropy of logits (N, V) (or (B, T, V)) against targets (N) (or (B, T)) of i32;
/// targets equal to ignore_index are skipped. Returns a scalar; NaN-free when all are ignored (0).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -1);
/// cross_entropy(linear(x, w), targets, ignore_index) without the (N, V) logits: x (N, C) or
/// (B, T, C), w (V, C) (the output head, e.g. GPT-2's tied wte), targets (N) or (B, T) of i32.
/// Rows go through in chunks of `chunk`: each chunk's (chunk, V) logits live in one reused
/// workspace and the backward recomputes them (one extra GEMM over N·V·C). chunk <= 0 or >= N is
/// one chunk whose logits are kept for the backward (the unfused cost). Gradients for x and w;
/// the loss (and its row count) stay on the device.
Tensor lm_head_cross_entropy(const Tensor& x, const Tensor& w, const Tensor& targets, int32_t ignore_index = -1,
                             int64_t chunk = 0);
/// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
/// Identity when !training or p == 0. Draws come from `gen` (counter-based, thread-count independent).
Tensor dropout(const Tensor& x, float p, bool training, Generator& gen);

// --- reductions -------------------------------------------------------------------------------
/// Sum of every element -> scalar (shape ()).
Tensor sum(const Tensor& x);
/// Mean of every element -> scalar.
Tensor mean(const Tensor& x);
/// Sum over dimension `dim` (negative counts from the end); keepdim keeps it with size 1.
Tensor sum(const Tensor& x, int dim, bool keepdim = false);
Tensor mean(const Tensor& x, int dim, bool keepdim = false);

// --- in place, never recorded (optimizers, gradient accumulation) -----------------------------
/// dst += alpha * src (same shape; dst must be contiguous f32).
Tensor& add_(Tensor& dst, const Tensor& src, float alpha = 1.f);
/// dst *= factor.
Tensor& scale_(Tensor& dst, float factor);

// --- views and layout -------------------------------------------------------------------------
/// Same elements, new shape; one dimension may be -1. Copies only when x is not contiguous.
Tensor reshape(const Tensor& x, Shape shape);
/// Like reshape, but x must be contiguous (never copies).
Tensor view(const Tensor& x, Shape shape);
Tensor transpose(const Tensor& x, int dim0, int dim1);
Tensor permute(const Tensor& x, const std::vector<int>& dims);
/// Elements [start, end) of dimension `dim` (a view).
Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end);
/// A view of x broadcast to `shape` (aligned from the right; new leading dims and dims of size 1
/// repeat with stride 0; -1 keeps a dim's size). No copy; the gradient is summed back to x's shape.
Tensor expand(const Tensor& x, Shape shape);
/// A contiguous copy when x is not contiguous (differentiable).
Tensor contiguous(const Tensor& x);

}  // namespace lmf
