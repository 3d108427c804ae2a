// Causal scaled dot-product attention with grouped-query heads and queries behind a KV cache. Only
// the per-row log-sum-exp (B, NH, Tq) is kept for the backward pass, which recomputes the
// probabilities block by block: a Tq x Tk probability tensor per head would dominate memory at
// useful context lengths. The CPU kernel reads q, k and v in place through their strides.
// On CUDA the tensor-core flash kernel (bf16 operands, f32 accumulation) runs wherever it can (HS 64
// or 128, Tq == Tk, sm_80+, ComputeOptions::attention_backend / LMF_ATTENTION); the f32 kernel is
// the fallback (other head sizes, queries behind a cache).
#include <cstdint>

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

// --- CUDA ------------------------------------------------------------------------------------------

bool flash_strides_ok(const Tensor& x) {
  const auto& s = x.strides();
  for (int i = 0; i + 1 < x.dim(); ++i)
    if (x.size(i) > 1 && s[i] % 8 != 0) return false;
  return s[x.dim() - 1] == 1 && reinterpret_cast<std::uintptr_t>(x.raw_data()) % 16 == 0;
}

// x as bf16 the flash kernel can read by strides: x itself when it already is bf16 with a unit-strided
// last dim, strides of multiples of 8 and a 16-byte aligned start (a slice of a fused buffer under
// mixed precision) and, when `contiguous`, no gaps; otherwise a rounded (f32) or copied (bf16)
// contiguous tensor from the cache.
Tensor flash_operand(const Tensor& x, bool contiguous = false) {
  if (x.dtype() == DType::bf16 && flash_strides_ok(x) && (!contiguous || x.is_contiguous())) return x.detach();
  Tensor out = x.dtype() == DType::bf16 ? x.clone() : x.to(DType::bf16);
  LMF_CHECK(flash_strides_ok(out), "attention: a contiguous bf16 copy of ", shape_str(x.shape()),
            " is not 16-byte aligned");
  return out.detach();
}

// Strides of a (B, heads, T, HS) tensor as the flash kernel's (batch, row, head); size-1 dims get 0
// (their stride is never multiplied by anything but 0, and may be odd in a view).
cuda::HeadStrides bhtd_strides(const Tensor& x) {
  const auto s = [&](int i) { return x.size(i) > 1 ? x.strides()[i] : 0; };
  return {s(0), s(2), s(1)};
}

// (B, heads, T, HS) f32 gradients of contiguous tensors shaped like x.
cuda::HeadStrides contiguous_bhtd(int64_t heads, int64_t t, int64_t hs) { return {heads * t * hs, hs, t * hs}; }

Tensor attention_cuda_flash(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const cpu::AttentionDims& d,
                            DType out_dtype) {
  const Device device = q_in.device();
  const Tensor q = flash_operand(q_in), k = flash_operand(k_in), v = flash_operand(v_in);
  const Tensor o = Tensor::empty({d.b, d.nh, d.tq, d.hs}, DType::bf16, device);  // (B, NH, T, HS)
  const Tensor lse = Tensor::empty({d.b, d.nh, d.tq}, DType::f32, device);        // (B, NH, T)
  cuda::FlashOperands ops;
  ops.b = d.b, ops.nh = d.nh, ops.nkv = d.nkv, ops.t = d.tq, ops.hs = d.hs;
  ops.q = q.raw_data(), ops.k = k.raw_data(), ops.v = v.raw_data(), ops.o = o.raw_data();
  ops.lse = lse.data<float>();
  ops.q_s = bhtd_strides(q), ops.k_s = bhtd_strides(k), ops.v_s = bhtd_strides(v), ops.o_s = bhtd_strides(o);
  cuda::flash_attention_forward(device, ops);
  // The bf16 o is what the backward's D = rowsum(dO * O) reads; an f32 run's output is widened from it.
  // The closure keeps o detached: under mixed precision o is the recorded output itself.
  const Tensor out = stored_as(o, out_dtype);
  return record(out, "attention", {q_in, k_in, v_in}, [q, k, v, o = o.detach(), lse, ops, d](const Tensor& g_in) {
    const Tensor g = flash_operand(g_in);  // (B, NH, T, HS)
    Tensor dq = Tensor::empty({d.b, d.nh, d.tq, d.hs}, DType::f32, g.device());
    Tensor dk = Tensor::empty({d.b, d.nkv, d.tk, d.hs}, DType::f32, g.device());
    Tensor dv = Tensor::empty({d.b, d.nkv, d.tk, d.hs}, DType::f32, g.device());
    cuda::flash_attention_backward(g.device(), ops, dq.data<float>(), contiguous_bhtd(d.nh, d.tq, d.hs),
                                   dk.data<float>(), contiguous_bhtd(d.nkv, d.tk, d.hs), dv.data<float>(),
                                   contiguous_bhtd(d.nkv, d.tk, d.hs), g.raw_data(), bhtd_strides(g));
    return std::vector<Tensor>{dq, dk, dv};
  });
}

// x (B, NKV, T, HS) f32 contiguous -> (B, NH, T, HS): each K/V head repeated for the G = NH / NKV
// query heads that read it, so the f32 backward kernel (one K/V head per query head) can run.
Tensor repeat_kv_heads(const Tensor& x, int64_t group) {
  if (group == 1) return x;
  const int64_t b = x.size(0), nkv = x.size(1), t = x.size(2), hs = x.size(3);
  const Tensor wide = Tensor::view_of(x.storage(), {b, nkv, group, t, hs}, x.dtype(), x.offset(),
                                      {nkv * t * hs, t * hs, 0, hs, 1});
  return wide.contiguous_copy();
}

// g (B, NH, T, HS) f32 contiguous -> (B, NKV, T, HS): the sum over each group's query heads.
Tensor sum_kv_groups(const Tensor& g, int64_t nkv) {
  const int64_t b = g.size(0), nh = g.size(1), t = g.size(2), hs = g.size(3);
  if (nh == nkv) return g;
  Tensor out = Tensor::empty({b, nkv, t, hs}, DType::f32, g.device());
  cuda::sum_dim_forward(g.device(), out.data<float>(), g.data<float>(), b * nkv, nh / nkv, t * hs, 1.f);
  return out;
}

Tensor attention_cuda_f32(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const cpu::AttentionDims& d,
                          DType out_dtype) {
  const Device device = q_in.device();
  // The f32 kernels read contiguous (B, heads, T, HS) operands; a bf16 operand is widened.
  const Tensor q = f32_contiguous(q_in), k = f32_contiguous(k_in), v = f32_contiguous(v_in);
  Tensor out = Tensor::empty(q_in.shape(), DType::f32, device);  // (B, NH, Tq, HS)
  Tensor lse = Tensor::empty({d.b, d.nh, d.tq}, DType::f32, device);  // (B, NH, Tq)
  cuda::attention_forward(device, out.data<float>(), lse.data<float>(), q.data<float>(), k.data<float>(),
                          v.data<float>(), d.b, d.nh, d.nkv, d.tq, d.tk, d.hs);
  const Tensor out_f32 = out;
  out = stored_as(out, out_dtype);
  return record(out, "attention", {q_in, k_in, v_in},
                [q = q.detach(), k = k.detach(), v = v.detach(), lse, out = out_f32.detach(), d](const Tensor& g_in) {
                  LMF_CHECK(d.tq == d.tk, "attention: the backward of queries behind a KV cache (Tq ", d.tq,
                            " < Tk ", d.tk, ") is not supported on CUDA (inference only)");
                  const Tensor g = f32_contiguous(g_in);  // (B, NH, T, HS)
                  // Grouped-query heads: K/V repeated per query head, their gradients summed back.
                  const int64_t group = d.nh / d.nkv;
                  const Tensor kw = repeat_kv_heads(k, group), vw = repeat_kv_heads(v, group);
                  Tensor dq = Tensor::empty(q.shape(), DType::f32, g.device());
                  Tensor dk = Tensor::empty(kw.shape(), DType::f32, g.device());
                  Tensor dv = Tensor::empty(vw.shape(), DType::f32, g.device());
                  cuda::attention_backward(g.device(), dq.data<float>(), dk.data<float>(), dv.data<float>(),
                                           g.data<float>(), out.data<float>(), q.data<float>(), kw.data<float>(),
                                           vw.data<float>(), lse.data<float>(), d.b * d.nh, d.tq, d.hs);
                  return std::vector<Tensor>{dq, sum_kv_groups(dk, d.nkv), sum_kv_groups(dv, d.nkv)};
                });
}

// The flash kernel reads q, k and v straight out of the (B, T, 3C) buffer (row stride 3C, head
// stride HS), writes the output (B, T, C) in its final layout, and the backward writes dq, dk, dv
// into one (B, T, 3C) gradient by the same strides: no split or merge copies.
Tensor causal_self_attention_flash(const Tensor& qkv_in, int64_t b, int64_t t, int64_t nh, int64_t hs) {
  const Device device = qkv_in.device();
  const int64_t c = nh * hs;
  const Tensor qkv = flash_operand(qkv_in, true);  // (B, T, 3C) bf16
  const Tensor o = Tensor::empty({b, t, c}, DType::bf16, device);  // (B, T, C)
  const Tensor lse = Tensor::empty({b, nh, t}, DType::f32, device);  // (B, NH, T)
  const auto* base = static_cast<const std::uint16_t*>(qkv.raw_data());  // bf16 storage
  const cuda::HeadStrides in_s{t * 3 * c, 3 * c, hs}, out_s{t * c, c, hs};
  cuda::FlashOperands ops;
  ops.b = b, ops.nh = nh, ops.nkv = nh, ops.t = t, ops.hs = hs;
  ops.q = base, ops.k = base + c, ops.v = base + 2 * c, ops.o = o.raw_data();
  ops.lse = lse.data<float>();
  ops.q_s = ops.k_s = ops.v_s = in_s;
  ops.o_s = out_s;
  cuda::flash_attention_forward(device, ops);
  const Tensor out = stored_as(o, activation_dtype(qkv_in));
  return record(out, "causal_self_attention", {qkv_in},
                [qkv, o = o.detach(), lse, ops, in_s, out_s, c](const Tensor& g_in) {
    const Tensor g = flash_operand(g_in, true);  // (B, T, C) bf16
    Tensor dqkv = Tensor::empty(qkv.shape(), DType::f32, g.device());  // (B, T, 3C), every element written
    float* dp = dqkv.data<float>();
    cuda::flash_attention_backward(g.device(), ops, dp, in_s, dp + c, in_s, dp + 2 * c, in_s, g.raw_data(), out_s);
    return std::vector<Tensor>{dqkv};
  });
}

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
  const bool any_bf16 = q_in.dtype() == DType::bf16 || k_in.dtype() == DType::bf16 || v_in.dtype() == DType::bf16;
  const DType out_dtype = any_bf16 ? DType::bf16 : activation_dtype(q_in);
  if (device.is_cpu()) {
    Tensor out = Tensor::empty(q_in.shape(), DType::f32, device);  // (B, NH, Tq, HS)
    Tensor lse = Tensor::empty({d.b, d.nh, d.tq}, DType::f32, device);  // (B, NH, Tq)
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
  if (d.b > 0 && d.nh > 0 && d.tq > 0 &&
      cuda::flash_attention_usable(device, compute_options().attention_backend, d.hs, d.tq, d.tk))
    return attention_cuda_flash(q_in, k_in, v_in, d, out_dtype);
  return attention_cuda_f32(q_in, k_in, v_in, d, out_dtype);
}

Tensor causal_self_attention(const Tensor& qkv_in, int64_t n_head) {
  check_float("causal_self_attention", qkv_in, "qkv");
  LMF_CHECK(qkv_in.dim() == 3 && n_head > 0 && qkv_in.size(2) % (3 * n_head) == 0 && qkv_in.size(2) > 0,
            "causal_self_attention: qkv must be (B, T, 3C) with C a multiple of n_head = ", n_head,
            ", got ", shape_str(qkv_in.shape()));
  const int64_t b = qkv_in.size(0), t = qkv_in.size(1), c = qkv_in.size(2) / 3, nh = n_head, hs = c / nh;
  if (qkv_in.device().is_cuda() && b > 0 && t > 0 &&
      cuda::flash_attention_usable(qkv_in.device(), compute_options().attention_backend, hs, t, t))
    return causal_self_attention_flash(qkv_in, b, t, nh, hs);
  if (qkv_in.device().is_cuda()) {  // the f32 kernels take (B, NH, T, HS) heads: split, attend, merge
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
