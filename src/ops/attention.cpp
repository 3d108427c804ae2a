// Causal scaled dot-product attention with grouped-query heads and queries behind a KV cache. Only
// the per-row log-sum-exp (B, NH, Tq) is kept for the backward pass, which recomputes the
// probabilities block by block: a Tq x Tk probability tensor per head would dominate memory at
// useful context lengths. The CPU kernel reads q, k and v in place through their strides.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

namespace {

// A (B, heads, T, HS) operand as the CPU kernel reads it: in place when its head dim is unit-strided
// (a view permuted from (B, T, NH, HS), a KV cache's prefix), otherwise a contiguous copy.
struct Heads {
  Tensor t;
  cpu::HeadLayout layout;
};
Heads cpu_heads(const Tensor& x) {
  const Tensor t = (x.strides()[3] == 1 || x.size(3) == 1 ? x : x.contiguous_copy()).detach();
  return {t, {t.strides()[0], t.strides()[1], t.strides()[2]}};
}

// h with f32 elements for the kernels: h itself when it already has them, otherwise (a bf16
// operand under mixed precision) a widened contiguous copy.
Heads widened(const Heads& h) { return h.t.dtype() == DType::f32 ? h : cpu_heads(h.t.to(DType::f32)); }

}  // namespace

Tensor attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in) {
  check_float("attention", q_in, "q");
  check_float("attention", k_in, "k");
  check_float("attention", v_in, "v");
  check_same_device("attention", q_in, "q", k_in, "k");
  check_same_device("attention", q_in, "q", v_in, "v");
  LMF_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4,
            "attention: q must be (B, NH, Tq, HS) and k, v (B, NKV, Tk, HS), got q ", shape_str(q_in.shape()),
            ", k ", shape_str(k_in.shape()), ", v ", shape_str(v_in.shape()));
  const cpu::AttentionDims d{q_in.size(0), q_in.size(1), k_in.size(1), q_in.size(2), k_in.size(2), q_in.size(3)};
  LMF_CHECK(v_in.shape() == k_in.shape() && k_in.size(0) == d.b && k_in.size(3) == d.hs && d.nkv > 0 &&
                d.nh % d.nkv == 0 && d.tq <= d.tk && d.hs > 0,
            "attention: q (B, NH, Tq, HS) ", shape_str(q_in.shape()), " needs k and v (B, NKV, Tk, HS) of equal shape "
            "with NKV dividing NH, Tq <= Tk and HS > 0, got k ", shape_str(k_in.shape()), ", v ",
            shape_str(v_in.shape()));
  const Device device = q_in.device();
  Tensor out = Tensor::empty(q_in.shape(), DType::f32, device);  // (B, NH, Tq, HS)
  Tensor lse = Tensor::empty({d.b, d.nh, d.tq}, DType::f32, device);  // (B, NH, Tq)
  const bool any_bf16 = q_in.dtype() == DType::bf16 || k_in.dtype() == DType::bf16 || v_in.dtype() == DType::bf16;
  const DType out_dtype = any_bf16 ? DType::bf16 : activation_dtype(q_in);
  if (device.is_cpu()) {
    // Kept as stored (bf16 under mixed precision: half the memory) and widened for each pass.
    const Heads q_saved = cpu_heads(q_in), k_saved = cpu_heads(k_in), v_saved = cpu_heads(v_in);
    const auto out_l = cpu::HeadLayout::contiguous(d.nh, d.tq, d.hs);
    {
      const Heads q = widened(q_saved), k = widened(k_saved), v = widened(v_saved);
      cpu::attention_forward(d, out.data<float>(), out_l, lse.data<float>(), q.t.data<float>(), q.layout,
                             k.t.data<float>(), k.layout, v.t.data<float>(), v.layout);
    }
    out = stored_as(out, out_dtype);
    return record(out, "attention", {q_in, k_in, v_in}, [q_saved, k_saved, v_saved, lse, d, out_l](const Tensor& g_in) {
      const Tensor g = g_in.contiguous_copy();  // (B, NH, Tq, HS)
      const Heads q = widened(q_saved), k = widened(k_saved), v = widened(v_saved);
      Tensor dq = Tensor::empty(q.t.shape(), DType::f32, g.device());
      Tensor dk = Tensor::empty(k.t.shape(), DType::f32, g.device());
      Tensor dv = Tensor::empty(v.t.shape(), DType::f32, g.device());
      const auto q_l = cpu::HeadLayout::contiguous(d.nh, d.tq, d.hs), kv_l = cpu::HeadLayout::contiguous(d.nkv, d.tk, d.hs);
      cpu::attention_backward(d, dq.data<float>(), q_l, dk.data<float>(), kv_l, dv.data<float>(), kv_l,
                              g.data<float>(), out_l, q.t.data<float>(), q.layout, k.t.data<float>(), k.layout,
                              v.t.data<float>(), v.layout, lse.data<float>());
      return std::vector<Tensor>{dq, dk, dv};
    });
  }
  // The CUDA kernels read contiguous (B, heads, T, HS) operands.
  // A bf16 operand (mixed precision) is widened: the GPU kernels here read f32.
  const Tensor q = f32_contiguous(q_in), k = f32_contiguous(k_in), v = f32_contiguous(v_in);
  cuda::attention_forward(device, out.data<float>(), lse.data<float>(), q.data<float>(), k.data<float>(),
                          v.data<float>(), d.b, d.nh, d.nkv, d.tq, d.tk, d.hs);
  const Tensor out_f32 = out;
  out = stored_as(out, out_dtype);
  return record(out, "attention", {q_in, k_in, v_in},
                [q = q.detach(), k = k.detach(), v = v.detach(), lse, out = out_f32.detach(), d](const Tensor& g_in) {
                  LMF_CHECK(d.nh == d.nkv && d.tq == d.tk,
                            "attention: the CUDA backward supports neither grouped-query heads nor queries "
                            "behind a cache yet (NH ", d.nh, ", NKV ", d.nkv, ", Tq ", d.tq, ", Tk ", d.tk, ")");
                  const Tensor g = g_in.contiguous_copy();  // (B, NH, T, HS)
                  Tensor dq = Tensor::empty(q.shape(), DType::f32, g.device());
                  Tensor dk = Tensor::empty(k.shape(), DType::f32, g.device());
                  Tensor dv = Tensor::empty(v.shape(), DType::f32, g.device());
                  cuda::attention_backward(g.device(), dq.data<float>(), dk.data<float>(), dv.data<float>(),
                                           g.data<float>(), out.data<float>(), q.data<float>(), k.data<float>(),
                                           v.data<float>(), lse.data<float>(), d.b * d.nh, d.tq, d.hs);
                  return std::vector<Tensor>{dq, dk, dv};
                });
}

Tensor causal_self_attention(const Tensor& qkv_in, int64_t n_head) {
  check_float("causal_self_attention", qkv_in, "qkv");
  LMF_CHECK(qkv_in.dim() == 3 && n_head > 0 && qkv_in.size(2) % (3 * n_head) == 0 && qkv_in.size(2) > 0,
            "causal_self_attention: qkv must be (B, T, 3C) with C a multiple of n_head = ", n_head,
            ", got ", shape_str(qkv_in.shape()));
  const int64_t b = qkv_in.size(0), t = qkv_in.size(1), c = qkv_in.size(2) / 3, nh = n_head, hs = c / nh;
  if (qkv_in.device().is_cuda()) {  // the CUDA kernels take (B, NH, T, HS) heads: split, attend, merge
    const Tensor heads = contiguous(permute(reshape(qkv_in, {b, t, 3, nh, hs}), {2, 0, 3, 1, 4}));
    const auto part = [&](int64_t i) { return view(slice(heads, 0, i, i + 1), {b, nh, t, hs}); };
    return reshape(transpose(attention(part(0), part(1), part(2)), 1, 2), {b, t, c});
  }
  const Tensor qkv_saved = qkv_in.contiguous_copy();  // bf16 under mixed precision, widened per pass
  Tensor out = Tensor::empty({b, t, c}, DType::f32, qkv_saved.device());  // (B, T, C)
  Tensor lse = Tensor::empty({b, nh, t}, DType::f32, qkv_saved.device());  // (B, NH, T)
  const auto in_l = cpu::HeadLayout::interleaved(nh, t, hs, 3), out_l = cpu::HeadLayout::interleaved(nh, t, hs, 1);
  const cpu::AttentionDims d{b, nh, nh, t, t, hs};
  {
    const Tensor qkv = f32_contiguous(qkv_saved);
    const float* p = qkv.data<float>();
    cpu::attention_forward(d, out.data<float>(), out_l, lse.data<float>(), p, in_l, p + c, in_l, p + 2 * c, in_l);
  }
  out = stored_as(out, activation_dtype(qkv_in));
  return record(out, "causal_self_attention", {qkv_in},
                [qkv_saved = qkv_saved.detach(), lse, d, c, in_l, out_l](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // (B, T, C)
                  const Tensor qkv = f32_contiguous(qkv_saved);
                  Tensor dqkv = Tensor::empty(qkv.shape(), DType::f32, g.device());  // every element written
                  const float* p = qkv.data<float>();
                  float* dp = dqkv.data<float>();
                  cpu::attention_backward(d, dp, in_l, dp + c, in_l, dp + 2 * c, in_l, g.data<float>(), out_l, p,
                                          in_l, p + c, in_l, p + 2 * c, in_l, lse.data<float>());
                  return std::vector<Tensor>{dqkv};
                });
}

}  // namespace lmf
