// matmul (2-D and batched, with transpose flags) and linear (x · wᵀ + b as one GEMM over all rows).
// Their backward passes are products with the transposes of the forward operands, which the flags
// express without materialising any transpose: for c = op(a) · op(b),
//   d op(a) = dc · op(b)ᵀ,  d op(b) = op(a)ᵀ · dc,  summed over the batch when b is shared.
#include <algorithm>
#include <chrono>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_kernel.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;
namespace {

struct MatmulDims {
  int64_t batch, m, n, k;
  bool shared_b;  // b is 2-D and used for every batch element
  bool trans_a, trans_b;
};

// Mixed precision: a parameter's bf16 copy stands in for it (refreshed after each optimizer step,
// so no product rounds the weights again); its gradient still goes to the f32 parameter.
Tensor product_operand(const Tensor& w) {
  const auto& copy = w.impl()->bf16_copy;
  return copy && compute_options().mixed_bf16 ? Tensor(copy) : w;
}

// Products write bf16 when either operand is bf16 or the thread runs mixed precision.
DType product_dtype(const Tensor& a, const Tensor& b) {
  return b.dtype() == DType::bf16 ? DType::bf16 : activation_dtype(a);
}

// A product on the device that holds the operands: cpu::gemm or cuda::gemm (the same contract),
// with the calling thread's compute options. a and b are contiguous, f32 or bf16 (mixed precision):
// the CPU kernel reads bf16 in place; so does a GPU where the operand is already K-contiguous (the
// others it packs to bf16 once, never through a widened f32 copy).
void gemm_batched_on(const Device& dev, int64_t batch, const Tensor& a, int64_t stride_a, const Tensor& b,
                     int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k,
                     bool trans_a, bool trans_b, bool accumulate = false, float* gelu_out = nullptr) {
  const ComputeOptions& options = compute_options();
  const bool a16 = a.dtype() == DType::bf16, b16 = b.dtype() == DType::bf16;
  switch (dev.type) {
    case DeviceType::cpu:
      if (!a16 && !b16) {
        cpu::gemm_batched(batch, a.data<float>(), stride_a, b.data<float>(), stride_b, c, stride_c, m, n, k, trans_a,
                          trans_b, accumulate, gelu_out, options);
      } else {
        cpu::gemm_batched_mixed(batch, a.raw_data(), a16, stride_a, b.raw_data(), b16, stride_b, c, stride_c, m, n,
                                k, trans_a, trans_b, accumulate, gelu_out, options);
      }
      break;
    case DeviceType::cuda:
      cuda::gemm_batched_typed(dev, batch, a.raw_data(), a.dtype(), stride_a, b.raw_data(), b.dtype(), stride_b, c,
                               stride_c, m, n, k, trans_a, trans_b, accumulate, gelu_out, options);
      break;
  }
}

void gemm_on(const Device& dev, const Tensor& a, const Tensor& b, float* c, int64_t m, int64_t n, int64_t k,
             bool trans_a, bool trans_b, bool accumulate = false, float* gelu_out = nullptr) {
  if (a.dtype() == DType::f32 && b.dtype() == DType::f32) {  // the f32 path, as it always was
    const ComputeOptions& options = compute_options();
    switch (dev.type) {
      case DeviceType::cpu:
        cpu::gemm(a.data<float>(), b.data<float>(), c, m, n, k, trans_a, trans_b, accumulate, gelu_out, options);
        return;
      case DeviceType::cuda:
        cuda::gemm(dev, a.data<float>(), b.data<float>(), c, m, n, k, trans_a, trans_b, accumulate, gelu_out, options);
        return;
    }
  }
  gemm_batched_on(dev, 1, a, 0, b, 0, c, 0, m, n, k, trans_a, trans_b, accumulate, gelu_out);
}

// Both input gradients of a (possibly batched) product, into the engine's destinations (each
// GEMM writes, or accumulates with beta = 1); a, b, g contiguous.
std::vector<Tensor> matmul_backward(const Tensor& a, const Tensor& b, const Tensor& g, const MatmulDims& d,
                                    bool need_a, bool need_b, const std::vector<GradDest>& dests) {
  const Device dev = g.device();
  need_a = need_a && dests[0].needed;
  need_b = need_b && dests[1].needed;
  Tensor da = need_a ? dests[0].output(a.shape(), dev) : Tensor();
  Tensor db = need_b ? dests[1].output(b.shape(), dev) : Tensor();
  const bool acc_a = need_a && dests[0].accumulate, acc_b = need_b && dests[1].accumulate;
  const int64_t sa = d.m * d.k, sb = d.shared_b ? 0 : d.k * d.n, sg = d.m * d.n;
  if (need_a && !d.trans_a) {  // da (M, K) = g (M, N) · op(b)ᵀ (N, K)
    if (d.shared_b) {
      gemm_on(dev, g, b, da.data<float>(), d.batch * d.m, d.k, d.n, false, !d.trans_b, acc_a);
    } else {
      gemm_batched_on(dev, d.batch, g, sg, b, sb, da.data<float>(), sa, d.m, d.k, d.n, false, !d.trans_b, acc_a);
    }
  } else if (need_a) {  // da (K, M) = op(b) (K, N) · gᵀ (N, M)
    gemm_batched_on(dev, d.batch, b, sb, g, sg, da.data<float>(), sa, d.k, d.m, d.n, d.trans_b, true, acc_a);
  }
  if (need_b && d.shared_b && !d.trans_a) {  // the batch folds into the rows: one GEMM
    if (!d.trans_b) {  // db (K, N) = aᵀ (K, B*M) · g (B*M, N)
      gemm_on(dev, a, g, db.data<float>(), d.k, d.n, d.batch * d.m, true, false, acc_b);
    } else {  // db (N, K) = gᵀ (N, B*M) · a (B*M, K)
      gemm_on(dev, g, a, db.data<float>(), d.n, d.k, d.batch * d.m, true, false, acc_b);
    }
  } else if (need_b) {
    for (int64_t i = 0; i < (d.shared_b ? d.batch : 1); ++i) {
      // Shared b with transposed a: one product per batch element, accumulated in order.
      const int64_t count = d.shared_b ? 1 : d.batch;
      const Tensor ai = d.shared_b ? slice(view(a, {d.batch, d.m * d.k}), 0, i, i + 1) : a;
      const Tensor gi = d.shared_b ? slice(view(g, {d.batch, d.m * d.n}), 0, i, i + 1) : g;
      const bool acc = acc_b || (d.shared_b && i > 0);
      if (!d.trans_b) {  // db (K, N) = op(a)ᵀ (K, M) · g (M, N)
        gemm_batched_on(dev, count, ai, sa, gi, sg, db.data<float>(), d.k * d.n, d.k, d.n, d.m, !d.trans_a, false,
                        acc);
      } else {  // db (N, K) = gᵀ (N, M) · op(a) (M, K)
        gemm_batched_on(dev, count, gi, sg, ai, sa, db.data<float>(), d.k * d.n, d.n, d.k, d.m, true, d.trans_a,
                        acc);
      }
    }
  }
  return {da, db};
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in, bool trans_a, bool trans_b) {
  check_float("matmul", a_in, "a");
  check_float("matmul", b_in, "b");
  check_same_device("matmul", a_in, "a", b_in, "b");
  LMF_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "matmul: needs at least 2-D operands, got a ",
            shape_str(a_in.shape()), " and b ", shape_str(b_in.shape()));
  const Shape &as = a_in.shape(), &bs = b_in.shape();
  MatmulDims d{};
  d.trans_a = trans_a;
  d.trans_b = trans_b;
  d.m = trans_a ? as[as.size() - 1] : as[as.size() - 2];
  d.k = trans_a ? as[as.size() - 2] : as[as.size() - 1];
  const int64_t kb = trans_b ? bs[bs.size() - 1] : bs[bs.size() - 2];
  d.n = trans_b ? bs[bs.size() - 2] : bs[bs.size() - 1];
  LMF_CHECK(d.k == kb, "matmul: inner dimensions differ: a ", shape_str(as),
            trans_a ? " (transposed)" : "", " has K=", d.k, ", b ", shape_str(bs),
            trans_b ? " (transposed)" : "", " has K=", kb);
  const Shape lead(as.begin(), as.end() - 2);
  d.shared_b = b_in.dim() == 2;
  LMF_CHECK(d.shared_b || Shape(bs.begin(), bs.end() - 2) == lead,
            "matmul: batch dimensions differ: a ", shape_str(as), ", b ", shape_str(bs),
            " (they must match, or b must be 2-D)");
  d.batch = shape_numel(lead);
  Shape out_shape = lead;
  out_shape.push_back(d.m);
  out_shape.push_back(d.n);

  const Tensor a = a_in.contiguous_copy(), b = product_operand(b_in).contiguous_copy();
  Tensor out = Tensor::empty(out_shape, DType::f32, a.device());
  if (d.shared_b && !trans_a) {  // (B*M, K) · op(b): one large GEMM
    gemm_on(a.device(), a, b, out.data<float>(), d.batch * d.m, d.n, d.k, false, trans_b);
  } else {
    gemm_batched_on(a.device(), d.batch, a, d.m * d.k, b, d.shared_b ? 0 : d.k * d.n, out.data<float>(), d.m * d.n,
                    d.m, d.n, d.k, trans_a, trans_b);
  }
  out = stored_as(out, product_dtype(a, b));
  const bool need_a = a_in.requires_grad(), need_b = b_in.requires_grad();
  return record_into(out, "matmul", {a_in, b_in},
                     [a = a.detach(), b = b.detach(), d, need_a, need_b](const Tensor& g,
                                                                         const std::vector<GradDest>& dests) {
                       return matmul_backward(a, b, g.contiguous_copy(), d, need_a, need_b, dests);
                     });
}

bool cpu_matmul_bf16_available() { return cpu::gemm_kernel_enabled() && cpu::have_avx512_bf16(); }

double cpu_gemm_gflops(int64_t n, int reps) {
  LMF_CHECK(n > 0 && reps > 0, "cpu_gemm_gflops: n and reps must be positive, got ", n, " and ", reps);
  std::vector<float> a(static_cast<std::size_t>(n * n), 0.5f), b(a.size(), 0.25f), c(a.size());
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    // The products of the options in force: bf16 ones when this scope multiplies in bf16, so MFU is
    // reported against the peak of the precision in use.
    cpu::gemm(a.data(), b.data(), c.data(), n, n, n, false, false, false, nullptr, compute_options());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) best = std::max(best, 2.0 * double(n) * double(n) * double(n) / s * 1e-9);
  }
  return best;
}

namespace {

// linear's inputs, checked, made contiguous, and what its backward needs.
struct LinearArgs {
  Tensor x, w, b;  // x (N, IN), w (OUT, IN), b (OUT) or undefined
  int64_t n = 0, in = 0, out = 0;
  Shape out_shape;
  DType out_dtype = DType::f32;  // bf16 under mixed precision or for bf16 operands
  bool need_x = false, need_w = false, need_b = false;
};

LinearArgs linear_args(const char* op, const Tensor& x_in, const Tensor& w_in, const Tensor& b_in) {
  check_float(op, x_in, "x");
  check_float(op, w_in, "w");
  check_same_device(op, x_in, "x", w_in, "w");
  LMF_CHECK(x_in.dim() >= 1 && w_in.dim() == 2 && x_in.size(-1) == w_in.size(1),
            op, ": x ", shape_str(x_in.shape()), " does not match w ", shape_str(w_in.shape()),
            " (expected x (..., IN) and w (OUT, IN))");
  LinearArgs a;
  a.in = w_in.size(1);
  a.out = w_in.size(0);
  a.n = x_in.numel() / std::max<int64_t>(a.in, 1);
  if (b_in.defined()) {
    check_f32(op, b_in, "b");
    check_same_device(op, x_in, "x", b_in, "b");
    LMF_CHECK(b_in.shape() == Shape{a.out}, op, ": bias of shape ", shape_str(b_in.shape()), " for w ",
              shape_str(w_in.shape()), " (expected (", a.out, "))");
    a.b = b_in.contiguous_copy();
  }
  a.out_shape = x_in.shape();
  a.out_shape.back() = a.out;
  a.x = x_in.contiguous_copy();
  a.w = product_operand(w_in).contiguous_copy();
  a.out_dtype = product_dtype(a.x, a.w);
  a.need_x = x_in.requires_grad();
  a.need_w = w_in.requires_grad();
  a.need_b = b_in.defined() && b_in.requires_grad();
  return a;
}

// dst (N, OUT) = bias (OUT) in every row: where a product over the bias rows starts.
void copy_rows_on(const Device& dev, float* dst, const float* bias, int64_t n, int64_t out) {
  switch (dev.type) {
    case DeviceType::cpu:
      cpu::copy_rows(dst, out, bias, 0, n, out);
      break;
    case DeviceType::cuda:
      cuda::copy_rows(dev, dst, out, bias, 0, n, out);
      break;
  }
}

// pre (N, OUT) = x wᵀ + b on the device; with gelu_out, also gelu(pre) (the GEMM's epilogue on the CPU).
// x and w f32 take the f32 entry points; a bf16 x or w (mixed precision) the same product over the
// bias rows, the CPU reading bf16 in place, a GPU widened copies.
void linear_forward_on(const LinearArgs& a, float* pre, float* gelu_out) {
  const ComputeOptions& options = compute_options();
  const float* bias = a.b.defined() ? a.b.data<float>() : nullptr;
  if (a.x.dtype() != DType::f32 || a.w.dtype() != DType::f32) {
    if (bias) copy_rows_on(a.x.device(), pre, bias, a.n, a.out);
    gemm_on(a.x.device(), a.x, a.w, pre, a.n, a.out, a.in, false, true, bias != nullptr, gelu_out);
    return;
  }
  switch (a.x.device().type) {
    case DeviceType::cpu:
      cpu::linear_forward(pre, a.x.data<float>(), a.w.data<float>(), bias, a.n, a.out, a.in, gelu_out, options);
      break;
    case DeviceType::cuda:
      cuda::linear_forward(a.x.device(), pre, a.x.data<float>(), a.w.data<float>(), bias, a.n, a.out, a.in,
                           gelu_out, options);
      break;
  }
}

// dx, dw, db of linear from g (N, OUT), contiguous, into the engine's destinations: a parameter's
// gradient (a view into the slab) takes dw and db directly, the GEMM and the column sums adding
// into it, so there is no (OUT, IN) temporary and no second pass to add it. A db already
// computed (fused into the GELU's backward on a GPU) is passed in and returned as it is.
std::vector<Tensor> linear_backward(const LinearArgs& a, const Tensor& g, const std::vector<GradDest>& dests,
                                    const Tensor& db_done = Tensor()) {
  const int64_t n = a.n, in = a.in, out = a.out;
  const Device dev = g.device();
  const bool need_x = a.need_x && dests[0].needed, need_w = a.need_w && dests[1].needed;
  const bool need_b = a.need_b && dests[2].needed && !db_done.defined();
  Tensor dx = need_x ? dests[0].output(a.x.shape(), dev) : Tensor();
  Tensor dw = need_w ? dests[1].output(a.w.shape(), dev) : Tensor();
  Tensor db = need_b ? dests[2].output({out}, dev) : db_done;
  // dx (N, IN) = g (N, OUT) · w (OUT, IN)
  if (need_x) gemm_on(dev, g, a.w, dx.data<float>(), n, in, out, false, false, dests[0].accumulate);
  // dw (OUT, IN) = gᵀ (OUT, N) · x (N, IN)
  if (need_w) gemm_on(dev, g, a.x, dw.data<float>(), out, in, n, true, false, dests[1].accumulate);
  if (need_b) {  // db (OUT) = column sums of g
    switch (dev.type) {
      case DeviceType::cpu:
        cpu::column_sums(g.data<float>(), db.data<float>(), n, out, 1.f, dests[2].accumulate);
        break;
      case DeviceType::cuda:
        cuda::column_sums(dev, g.data<float>(), db.data<float>(), n, out, 1.f, dests[2].accumulate);
        break;
    }
  }
  return {dx, dw, db};
}

// What a backward closure keeps of LinearArgs: no autograd history on x, w and b.
LinearArgs detached(LinearArgs a) {
  a.x = a.x.detach();
  a.w = a.w.detach();
  if (a.b.defined()) a.b = a.b.detach();
  return a;
}

// On a GPU one GEMM reads bf16 x and w in place and writes out (and pre, with the GELU) in the
// output dtype straight from its f32 accumulators, bias and GELU in the epilogue.
void linear_forward_gpu(const LinearArgs& a, Tensor& out, Tensor* pre) {
  const Device dev = a.x.device();
  out = Tensor::empty(a.out_shape, a.out_dtype, dev);
  if (pre) *pre = Tensor::empty(a.out_shape, a.out_dtype, dev);
  cuda::linear_forward_typed(dev, out.raw_data(), pre ? pre->raw_data() : nullptr, a.out_dtype, a.x.raw_data(),
                             a.x.dtype(), a.w.raw_data(), a.w.dtype(), a.b.defined() ? a.b.data<float>() : nullptr,
                             a.n, a.out, a.in, compute_options());
}

}  // namespace

Tensor linear(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in) {
  const LinearArgs a = linear_args("linear", x_in, w_in, b_in);
  Tensor out;
  if (a.x.device().is_cuda()) {
    linear_forward_gpu(a, out, nullptr);
  } else {
    out = Tensor::empty(a.out_shape, DType::f32, a.x.device());
    linear_forward_on(a, out.data<float>(), nullptr);
    out = stored_as(out, a.out_dtype);
  }
  return record_into(out, "linear", {x_in, w_in, b_in},
                     [a = detached(a)](const Tensor& g_in, const std::vector<GradDest>& dests) {
                       return linear_backward(a, g_in.contiguous_copy(), dests);
                     });
}

Tensor linear_gelu(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in) {
  const LinearArgs a = linear_args("linear_gelu", x_in, w_in, b_in);
  Tensor pre, out;  // pre = x wᵀ + b, kept for backward (bf16 under mixed precision, like out)
  if (a.x.device().is_cuda()) {
    linear_forward_gpu(a, out, &pre);
  } else {
    pre = Tensor::empty(a.out_shape, DType::f32, a.x.device());
    out = Tensor::empty(a.out_shape, DType::f32, a.x.device());
    linear_forward_on(a, pre.data<float>(), out.data<float>());
    pre = stored_as(pre, a.out_dtype);
    out = stored_as(out, a.out_dtype);
  }
  return record_into(out, "linear_gelu", {x_in, w_in, b_in},
                     [a = detached(a), pre_in = pre](const Tensor& g_in, const std::vector<GradDest>& dests) {
                       const Tensor g = g_in.contiguous_copy();  // (N, OUT)
                       Tensor dpre = Tensor::empty(pre_in.shape(), DType::f32, g.device());
                       if (g.device().is_cuda()) {  // dGELU and the bias gradient in one pass
                         const bool need_b = a.need_b && dests[2].needed;
                         Tensor db = need_b ? dests[2].output({a.out}, g.device()) : Tensor();
                         cuda::gelu_bias_backward(g.device(), dpre.data<float>(), need_b ? db.data<float>() : nullptr,
                                                  g.data<float>(), pre_in.raw_data(), pre_in.dtype(), a.n, a.out,
                                                  need_b && dests[2].accumulate);
                         return linear_backward(a, dpre, dests, db);
                       }
                       const Tensor pre = f32_contiguous(pre_in);
                       switch (g.device().type) {
                         case DeviceType::cpu:
                           cpu::gelu_backward(dpre.data<float>(), g.data<float>(), pre.data<float>(), pre.numel());
                           break;
                         case DeviceType::cuda:
                           cuda::gelu_backward(g.device(), dpre.data<float>(), g.data<float>(), pre.data<float>(),
                                               pre.numel());
                           break;
                       }
                       return linear_backward(a, dpre, dests);
                     });
}

}  // namespace lmf
