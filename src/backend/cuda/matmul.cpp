// Host glue for matrix products: each operand reaches the GEMM of kernels/matmul.cu in its one
// layout, bf16 and K-contiguous, then the tensor-core kernel, cuBLASLt or the Hopper kernel
// multiplies (ComputeOptions::matmul_backend, passed by the op; LMF_MATMUL overrides). A bf16
// operand that already is K-contiguous with rows 16-byte aligned is read in place (the kernels
// predicate ragged M, N and K, so no padding is needed); anything else (an f32 operand, a transposed
// one) is packed to bf16 first, which is where transposes disappear. Accumulation is fp32.
// Which products of a GPT-2 layer still pack under `run.precision: bf16` (docs/kernels.md has the
// table): the forward reads everything in place (x and activations bf16 (N, IN), weights as their
// bf16 copies (OUT, IN) = "N x K"); the backward's dx = g · w packs g (f32 gradient) and w (its K
// is OUT, not contiguous), and dw = gᵀ · x packs both (K is the row dim N of each).
#include <cstdlib>
#include <optional>
#include <string>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.h"
#include "lmforge/core/compute.h"

namespace lmf::cuda {
namespace {

namespace k = lmf::kernels;

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// LMF_MATMUL, read once: a benchmark or the GPU check can switch every product of a process
// without a config change. An unknown value is an error, not a silent default.
std::optional<k::MatmulBackend> env_backend() {
  static const std::optional<k::MatmulBackend> choice = []() -> std::optional<k::MatmulBackend> {
    const char* v = std::getenv("LMF_MATMUL");
    if (v == nullptr || *v == '\0') return std::nullopt;
    const std::string s(v);
    if (s == "custom" || s == "mma") return k::MatmulBackend::custom;
    if (s == "cublas") return k::MatmulBackend::cublas;
    if (s == "wgmma") return k::MatmulBackend::wgmma;
    throw Error("LMF_MATMUL: '" + s + "' is not one of custom, mma, cublas, wgmma");
  }();
  return choice;
}

k::MatmulBackend backend(const ComputeOptions& options) {
  if (const auto forced = env_backend()) return *forced;
  switch (options.matmul_backend) {
    case MatmulBackend::cublas: return k::MatmulBackend::cublas;
    case MatmulBackend::wgmma: return k::MatmulBackend::wgmma;
    case MatmulBackend::custom: break;
  }
  return k::MatmulBackend::custom;
}

// One operand as the caller holds it: `rows` (M for a, N for b) by K per batch element, f32 or
// bf16, K-contiguous (element (r, c) at r * K + c) or transposed (at c * rows + r).
struct Operand {
  const void* ptr = nullptr;
  bool bf16 = false;
  int64_t stride = 0;  // between batch elements; 0 shares
  bool k_contiguous = true;
};

// The operand in the GEMM's layout: `ptr` with leading dimension `ld` and batch stride `stride`,
// either the caller's memory or `storage`, a packed copy.
struct GemmOperand {
  const k::bf16_t* ptr = nullptr;
  int64_t ld = 0, stride = 0;
  Tensor storage;
  bool packed() const { return storage.defined(); }
};

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

GemmOperand prepare(Device device, const Operand& op, int64_t batch, int64_t rows, int64_t kk) {
  GemmOperand g;
  if (op.bf16 && op.k_contiguous && kk % 8 == 0 && op.stride % 8 == 0 && aligned16(op.ptr)) {
    g.ptr = static_cast<const k::bf16_t*>(op.ptr);
    g.ld = kk;
    g.stride = op.stride;
    return g;
  }
  const int64_t batches = op.stride == 0 ? 1 : batch, kp = round_up(kk, 8);  // rows 16-byte aligned
  g.storage = workspace(device, 2 * batches * rows * kp);
  auto* out = reinterpret_cast<k::bf16_t*>(g.storage.raw_data());
  const int64_t sr = op.k_contiguous ? kk : 1, sc = op.k_contiguous ? 1 : rows;
  if (op.bf16) {
    k::pack_bf16_from_bf16(out, static_cast<const k::bf16_t*>(op.ptr), batches, rows, kk, rows, kp, op.stride, sr, sc,
                           stream());
  } else {
    k::pack_bf16(out, static_cast<const float*>(op.ptr), batches, rows, kk, rows, kp, op.stride, sr, sc, stream());
  }
  g.ptr = out;
  g.ld = kp;
  g.stride = op.stride == 0 ? 0 : rows * kp;
  return g;
}

// c (M, N) f32 or bf16 (c_bf16) = op(a) · op(b) (+ bias); with gelu_aux: c = gelu(pre) and
// gelu_aux = pre, in c's dtype and layout; or c += the product when accumulate.
void run(Device device, int64_t batch, const Operand& a, const Operand& b, void* c, bool c_bf16, int64_t stride_c,
         int64_t m, int64_t n, int64_t kk, const float* bias, bool accumulate, void* gelu_aux,
         const ComputeOptions& options) {
  DeviceGuard guard(device);
  const k::MatmulBackend which = backend(options);
  const GemmOperand pa = prepare(device, a, batch, m, kk), pb = prepare(device, b, batch, n, kk);
  k::GemmParams p;
  p.a = pa.ptr;
  p.b = pb.ptr;
  p.bias = bias;
  p.m = m, p.n = n, p.k = kk;
  p.lda = pa.ld, p.ldb = pb.ld, p.ldc = n;
  p.stride_a = pa.stride;
  p.stride_b = pb.stride;
  p.stride_c = stride_c;
  p.batch = batch;
  p.accumulate = accumulate;
  p.gelu = gelu_aux != nullptr;
  // cuBLASLt writes its product to c before the epilogue pass reads it back: a bf16 c would round
  // the product before the bias and GELU. It multiplies into f32 scratch instead, then rounds once.
  const bool staged = c_bf16 && which == k::MatmulBackend::cublas && (bias || gelu_aux);
  LMF_CHECK(!staged || batch == 1 || stride_c == m * n, "cuda gemm: a bf16 output must be contiguous");
  Tensor scratch_c, scratch_aux;
  if (staged) {
    scratch_c = Tensor::empty({batch * m * n}, DType::f32, device);
    if (gelu_aux) scratch_aux = Tensor::empty({batch * m * n}, DType::f32, device);
    p.c_f32 = scratch_c.data<float>();
    p.aux_f32 = gelu_aux ? scratch_aux.data<float>() : nullptr;
    p.stride_c = m * n;
  } else if (c_bf16) {
    p.c_bf16 = static_cast<k::bf16_t*>(c);
    p.aux_bf16 = static_cast<k::bf16_t*>(gelu_aux);
  } else {
    p.c_f32 = static_cast<float*>(c);
    p.aux_f32 = static_cast<float*>(gelu_aux);
  }
  k::gemm(p, which, stream());
  if (!staged) return;
  k::StridedLayout layout;
  layout.nd = 1;
  layout.shape[0] = batch * m * n;
  layout.strides[0] = 1;
  k::strided_copy(c, k::ElemType::bf16, p.c_f32, k::ElemType::f32, layout, stream());
  if (gelu_aux) k::strided_copy(gelu_aux, k::ElemType::bf16, p.aux_f32, k::ElemType::f32, layout, stream());
}

// The f32 entry points' contract: c (M, N) f32; gelu_out (c's layout) = gelu(c) beside it. Without
// accumulation one pass writes both (the pre-activation c as the epilogue's aux output).
void run_f32(Device device, int64_t batch, const Operand& a, const Operand& b, float* c, int64_t stride_c, int64_t m,
             int64_t n, int64_t kk, const float* bias, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  if (gelu_out && !accumulate) {
    run(device, batch, a, b, gelu_out, false, stride_c, m, n, kk, bias, false, c, options);
    return;
  }
  run(device, batch, a, b, c, false, stride_c, m, n, kk, bias, accumulate, nullptr, options);
  if (!gelu_out) return;
  // GELU of the accumulated c: a separate pass (the sum is complete only after the GEMM).
  if (stride_c == m * n || batch == 1) {
    k::gelu_forward(gelu_out, c, batch * m * n, stream());
  } else {
    for (int64_t i = 0; i < batch; ++i) k::gelu_forward(gelu_out + i * stride_c, c + i * stride_c, m * n, stream());
  }
}

// op(a) (M, K) as an Operand: a is (M, K), or (K, M) when trans.
Operand operand_a(const void* a, bool bf16, int64_t stride, bool trans) { return Operand{a, bf16, stride, !trans}; }
// op(b) (K, N) as the (N, K) operand: b is (N, K) when trans, else (K, N).
Operand operand_b(const void* b, bool bf16, int64_t stride, bool trans) { return Operand{b, bf16, stride, trans}; }

}  // namespace

void gemm(Device device, const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k,
          bool trans_a, bool trans_b, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  run_f32(device, 1, operand_a(a, false, 0, trans_a), operand_b(b, false, 0, trans_b), c, 0, m, n, k, nullptr,
          accumulate, gelu_out, options);
}

void gemm_batched(Device device, int64_t batch, const float* a, int64_t stride_a, const float* b,
                  int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k, bool trans_a,
                  bool trans_b, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  gemm_batched_typed(device, batch, a, DType::f32, stride_a, b, DType::f32, stride_b, c, stride_c, m, n, k, trans_a,
                     trans_b, accumulate, gelu_out, options);
}

void gemm_batched_typed(Device device, int64_t batch, const void* a, DType a_dtype, int64_t stride_a, const void* b,
                        DType b_dtype, int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k,
                        bool trans_a, bool trans_b, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  LMF_CHECK(stride_c != 0 || batch <= 1, "gemm_batched: c's stride must not be 0");
  LMF_CHECK(a_dtype == DType::f32 || a_dtype == DType::bf16, "cuda gemm: a must be f32 or bf16");
  LMF_CHECK(b_dtype == DType::f32 || b_dtype == DType::bf16, "cuda gemm: b must be f32 or bf16");
  if (batch == 1) stride_a = stride_b = 0;  // one element: nothing to share or to step over
  run_f32(device, batch, operand_a(a, a_dtype == DType::bf16, stride_a, trans_a),
          operand_b(b, b_dtype == DType::bf16, stride_b, trans_b), c, stride_c, m, n, k, nullptr, accumulate,
          gelu_out, options);
}

void linear_forward(Device device, float* out, const float* x, const float* w, const float* bias, int64_t n,
                    int64_t out_features, int64_t in_features, float* gelu_out, const ComputeOptions& options) {
  // out (N, OUT) = x (N, IN) · w (OUT, IN)ᵀ: w is already the "N x K" operand's layout.
  run_f32(device, 1, operand_a(x, false, 0, false), operand_b(w, false, 0, true), out, 0, n, out_features,
          in_features, bias, false, gelu_out, options);
}

void linear_forward_typed(Device device, void* out, void* pre, DType out_dtype, const void* x, DType x_dtype,
                          const void* w, DType w_dtype, const float* bias, int64_t n, int64_t out_features,
                          int64_t in_features, const ComputeOptions& options) {
  LMF_CHECK(out_dtype == DType::f32 || out_dtype == DType::bf16, "cuda linear: out must be f32 or bf16");
  LMF_CHECK(x_dtype == DType::f32 || x_dtype == DType::bf16, "cuda linear: x must be f32 or bf16");
  LMF_CHECK(w_dtype == DType::f32 || w_dtype == DType::bf16, "cuda linear: w must be f32 or bf16");
  // A bf16 x (N, IN) and a bf16 w (OUT, IN) are both read in place.
  run(device, 1, operand_a(x, x_dtype == DType::bf16, 0, false), operand_b(w, w_dtype == DType::bf16, 0, true),
      out, out_dtype == DType::bf16, 0, n, out_features, in_features, bias, false, pre, options);
}

}  // namespace lmf::cuda
