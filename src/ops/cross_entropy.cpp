// Mean cross-entropy of logits (N, V) or (B, T, V) against i32 targets, fused with the softmax.
// The closure keeps the logits and the per-row log-sum-exp (N) only; the probabilities are
// recomputed in the backward pass. The mean is over targets that are not ignore_index, and is 0
// (with zero gradients) when every target is ignored.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

Tensor cross_entropy(const Tensor& logits_in, const Tensor& targets_in, int32_t ignore_index) {
  check_float("cross_entropy", logits_in, "logits");
  check_defined("cross_entropy", targets_in, "targets");
  check_same_device("cross_entropy", logits_in, "logits", targets_in, "targets");
  LMF_CHECK(targets_in.dtype() == DType::i32, "cross_entropy: targets must be i32, got ",
            dtype_name(targets_in.dtype()));
  LMF_CHECK(logits_in.dim() >= 2, "cross_entropy: logits must be (N, V) or (B, T, V), got ",
            shape_str(logits_in.shape()));
  const Shape& ls = logits_in.shape();
  LMF_CHECK(Shape(ls.begin(), ls.end() - 1) == targets_in.shape(), "cross_entropy: logits ",
            shape_str(ls), " do not match targets ", shape_str(targets_in.shape()),
            " (targets must have the logits' shape without the last dim)");
  const int64_t v = logits_in.size(-1), n = targets_in.numel();
  LMF_CHECK(v > 0, "cross_entropy: empty vocabulary dim in logits ", shape_str(ls));
  // bf16 logits (mixed precision) are kept as stored: read in place by the CUDA kernels, widened for
  // each pass for the f32 CPU kernels. The softmax, the log-sum-exp and the loss are f32 math either way.
  const Tensor logits_saved = logits_in.contiguous_copy(), targets = targets_in.contiguous_copy();
  const Device dev = logits_saved.device();
  Tensor loss = Tensor::empty({}, DType::f32, dev);
  Tensor count = Tensor::empty({}, DType::f32, dev);  // counted rows; on a GPU it stays there (no sync)
  Tensor lse = Tensor::empty({n}, DType::f32, dev);   // (N)
  if (dev.type == DeviceType::cuda) {
    cuda::check_ids_i32(dev, "cross_entropy: target", targets.data<int32_t>(), n, v, ignore_index);
    cuda::cross_entropy_forward_typed(dev, loss.data<float>(), count.data<float>(), lse.data<float>(),
                                      logits_saved.raw_data(), logits_saved.dtype(), targets.data<int32_t>(), n, v,
                                      ignore_index);
  } else {
    const Tensor logits = f32_contiguous(logits_saved);
    cpu::check_ids_i32("cross_entropy: target", targets.data<int32_t>(), n, v, ignore_index);
    cpu::cross_entropy_forward(loss.data<float>(), count.data<float>(), lse.data<float>(), logits.data<float>(),
                               targets.data<int32_t>(), n, v, ignore_index);
  }
  return record(loss, "cross_entropy", {logits_in, targets_in},
                [logits_saved = logits_saved.detach(), targets = targets.detach(), lse, n, v, count,
                 ignore_index](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // () on the logits' device
                  Tensor dlogits = Tensor::empty(logits_saved.shape(), DType::f32, g.device());
                  if (g.device().type == DeviceType::cuda) {
                    cuda::cross_entropy_backward_typed(g.device(), dlogits.data<float>(), logits_saved.raw_data(),
                                                       logits_saved.dtype(), lse.data<float>(),
                                                       targets.data<int32_t>(), g.data<float>(),
                                                       count.data<float>(), n, v, ignore_index);
                  } else {
                    const Tensor logits = f32_contiguous(logits_saved);
                    cpu::cross_entropy_backward(dlogits.data<float>(), logits.data<float>(), lse.data<float>(),
                                                targets.data<int32_t>(), g.data<float>(), count.data<float>(), n,
                                                v, ignore_index);
                  }
                  return std::vector<Tensor>{dlogits, Tensor()};
                });
}

}  // namespace lmf
