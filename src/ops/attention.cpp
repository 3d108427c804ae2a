// Causal scaled dot-product attention. Only the per-row log-sum-exp (B, NH, T) is kept for the
// backward pass, which recomputes the probabilities block by block: a T x T probability tensor per
// head would dominate memory at useful context lengths.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

Tensor attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in) {
  check_f32("attention", q_in, "q");
  check_f32("attention", k_in, "k");
  check_f32("attention", v_in, "v");
  check_same_device("attention", q_in, "q", k_in, "k");
  check_same_device("attention", q_in, "q", v_in, "v");
  LMF_CHECK(q_in.dim() == 4, "attention: q must be (B, NH, T, HS), got ", shape_str(q_in.shape()));
  LMF_CHECK(k_in.shape() == q_in.shape() && v_in.shape() == q_in.shape(),
            "attention: q, k and v must have the same shape, got q ", shape_str(q_in.shape()),
            ", k ", shape_str(k_in.shape()), ", v ", shape_str(v_in.shape()));
  const int64_t b = q_in.size(0), nh = q_in.size(1), t = q_in.size(2), hs = q_in.size(3), bh = b * nh;
  LMF_CHECK(hs > 0, "attention: head size must be positive, got q ", shape_str(q_in.shape()));
  const Tensor q = q_in.contiguous_copy(), k = k_in.contiguous_copy(), v = v_in.contiguous_copy();
  Tensor out = Tensor::empty(q.shape(), DType::f32, q.device());  // (B, NH, T, HS)
  Tensor lse = Tensor::empty({b, nh, t}, DType::f32, q.device());  // (B, NH, T)
  const auto layout = cpu::HeadLayout::contiguous(nh, t, hs);
  switch (q.device().type) {
    case DeviceType::cpu:
      cpu::attention_forward(out.data<float>(), layout, lse.data<float>(), q.data<float>(), k.data<float>(),
                             v.data<float>(), layout, b, nh, t, hs);
      break;
    case DeviceType::cuda:
      cuda::attention_forward(q.device(), out.data<float>(), lse.data<float>(), q.data<float>(), k.data<float>(),
                              v.data<float>(), bh, t, hs);
      break;
  }
  // The GPU backward needs rowsum(dout * out); the CPU one does not keep the output.
  const Tensor out_saved = q.device().is_cuda() ? out.detach() : Tensor();
  return record(out, "attention", {q_in, k_in, v_in},
                [q = q.detach(), k = k.detach(), v = v.detach(), lse, out_saved, b, nh, t, hs,
                 layout](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // (B, NH, T, HS)
                  Tensor dq = Tensor::empty(q.shape(), DType::f32, g.device());
                  Tensor dk = Tensor::empty(q.shape(), DType::f32, g.device());
                  Tensor dv = Tensor::empty(q.shape(), DType::f32, g.device());
                  switch (g.device().type) {
                    case DeviceType::cpu:
                      cpu::attention_backward(dq.data<float>(), dk.data<float>(), dv.data<float>(), layout,
                                              g.data<float>(), layout, q.data<float>(), k.data<float>(),
                                              v.data<float>(), layout, lse.data<float>(), b, nh, t, hs);
                      break;
                    case DeviceType::cuda:
                      cuda::attention_backward(g.device(), dq.data<float>(), dk.data<float>(), dv.data<float>(),
                                               g.data<float>(), out_saved.data<float>(), q.data<float>(),
                                               k.data<float>(), v.data<float>(), lse.data<float>(), b * nh, t,
                                               hs);
                      break;
                  }
                  return std::vector<Tensor>{dq, dk, dv};
                });
}

Tensor causal_self_attention(const Tensor& qkv_in, int64_t n_head) {
  check_f32("causal_self_attention", qkv_in, "qkv");
  LMF_CHECK(qkv_in.dim() == 3 && n_head > 0 && qkv_in.size(2) % (3 * n_head) == 0 && qkv_in.size(2) > 0,
            "causal_self_attention: qkv must be (B, T, 3C) with C a multiple of n_head = ", n_head,
            ", got ", shape_str(qkv_in.shape()));
  const int64_t b = qkv_in.size(0), t = qkv_in.size(1), c = qkv_in.size(2) / 3, nh = n_head, hs = c / nh;
  if (qkv_in.device().is_cuda()) {  // the CUDA kernels take (B, NH, T, HS) heads: split, attend, merge
    const Tensor heads = contiguous(permute(reshape(qkv_in, {b, t, 3, nh, hs}), {2, 0, 3, 1, 4}));
    const auto part = [&](int64_t i) { return view(slice(heads, 0, i, i + 1), {b, nh, t, hs}); };
    return reshape(transpose(attention(part(0), part(1), part(2)), 1, 2), {b, t, c});
  }
  const Tensor qkv = qkv_in.contiguous_copy();
  Tensor out = Tensor::empty({b, t, c}, DType::f32, qkv.device());  // (B, T, C)
  Tensor lse = Tensor::empty({b, nh, t}, DType::f32, qkv.device());  // (B, NH, T)
  const auto in_l = cpu::HeadLayout::interleaved(nh, t, hs, 3), out_l = cpu::HeadLayout::interleaved(nh, t, hs, 1);
  const float* p = qkv.data<float>();
  cpu::attention_forward(out.data<float>(), out_l, lse.data<float>(), p, p + c, p + 2 * c, in_l, b, nh, t, hs);
  return record(out, "causal_self_attention", {qkv_in},
                [qkv = qkv.detach(), lse, b, nh, t, c, hs, in_l, out_l](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // (B, T, C)
                  Tensor dqkv = Tensor::empty(qkv.shape(), DType::f32, g.device());  // every element written
                  const float* p = qkv.data<float>();
                  float* d = dqkv.data<float>();
                  cpu::attention_backward(d, d + c, d + 2 * c, in_l, g.data<float>(), out_l, p, p + c, p + 2 * c,
                                          in_l, lse.data<float>(), b, nh, t, hs);
                  return std::vector<Tensor>{dqkv};
                });
}

}  // namespace lmf
