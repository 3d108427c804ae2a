// Causal scaled dot-product attention over (B, NH, T, HS) heads. Only the per-row log-sum-exp
// (B, NH, T) is kept for the backward pass, which recomputes the probabilities block by block:
// a T x T probability tensor per head would dominate memory at useful context lengths.
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
  const int64_t bh = q_in.size(0) * q_in.size(1), t = q_in.size(2), hs = q_in.size(3);
  LMF_CHECK(hs > 0, "attention: head size must be positive, got q ", shape_str(q_in.shape()));
  const Tensor q = q_in.contiguous_copy(), k = k_in.contiguous_copy(), v = v_in.contiguous_copy();
  Tensor out = Tensor::empty(q.shape(), DType::f32, q.device());  // (B, NH, T, HS)
  Tensor lse = Tensor::empty({q.size(0), q.size(1), t}, DType::f32, q.device());  // (B, NH, T)
  switch (q.device().type) {
    case DeviceType::cpu:
      cpu::attention_forward(out.data<float>(), lse.data<float>(), q.data<float>(), k.data<float>(),
                             v.data<float>(), bh, t, hs);
      break;
    case DeviceType::cuda:
      cuda::attention_forward(q.device(), out.data<float>(), lse.data<float>(), q.data<float>(), k.data<float>(),
                              v.data<float>(), bh, t, hs);
      break;
  }
  // The GPU backward needs rowsum(dout * out); the CPU one does not keep the output.
  const Tensor out_saved = q.device().is_cuda() ? out.detach() : Tensor();
  return record(out, "attention", {q_in, k_in, v_in},
                [q = q.detach(), k = k.detach(), v = v.detach(), lse, out_saved, bh, t, hs](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // (B, NH, T, HS)
                  Tensor dq = Tensor::empty(q.shape(), DType::f32, g.device());
                  Tensor dk = Tensor::empty(q.shape(), DType::f32, g.device());
                  Tensor dv = Tensor::empty(q.shape(), DType::f32, g.device());
                  switch (g.device().type) {
                    case DeviceType::cpu:
                      cpu::attention_backward(dq.data<float>(), dk.data<float>(), dv.data<float>(), g.data<float>(),
                                              q.data<float>(), k.data<float>(), v.data<float>(), lse.data<float>(),
                                              bh, t, hs);
                      break;
                    case DeviceType::cuda:
                      cuda::attention_backward(g.device(), dq.data<float>(), dk.data<float>(), dv.data<float>(),
                                               g.data<float>(), out_saved.data<float>(), q.data<float>(),
                                               k.data<float>(), v.data<float>(), lse.data<float>(), bh, t, hs);
                      break;
                  }
                  return std::vector<Tensor>{dq, dk, dv};
                });
}

}  // namespace lmf
