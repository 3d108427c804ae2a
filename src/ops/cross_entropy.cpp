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
  check_f32("cross_entropy", logits_in, "logits");
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
  const Tensor logits = logits_in.contiguous_copy(), targets = targets_in.contiguous_copy();
  Tensor loss = Tensor::empty({}, DType::f32, logits.device());
  Tensor lse = Tensor::empty({n}, DType::f32, logits.device());  // (N)
  int64_t count = 0;
  // On the GPU the number of counted rows stays on the device (no host sync per step).
  Tensor count_dev = logits.device().is_cuda() ? Tensor::empty({}, DType::f32, logits.device()) : Tensor();
  switch (logits.device().type) {
    case DeviceType::cpu: {
      const int32_t* tg = targets.data<int32_t>();
      for (int64_t i = 0; i < n; ++i)
        LMF_CHECK(tg[i] == ignore_index || (tg[i] >= 0 && tg[i] < v), "cross_entropy: target ",
                  tg[i], " at position ", i, " is outside the vocabulary of size ", v,
                  " (ignore_index is ", ignore_index, ")");
      std::vector<float> losses(static_cast<std::size_t>(n));  // (N)
      count = cpu::cross_entropy_forward(losses.data(), lse.data<float>(), logits.data<float>(), tg,
                                         n, v, ignore_index);
      const double total = cpu::sum_all(losses.data(), n);
      loss.data<float>()[0] = count ? static_cast<float>(total / count) : 0.f;
      break;
    }
    case DeviceType::cuda:
      cuda::check_ids_i32(logits.device(), "cross_entropy: target", targets.data<int32_t>(), n, v, ignore_index);
      cuda::cross_entropy_forward(logits.device(), loss.data<float>(), count_dev.data<float>(), lse.data<float>(),
                                  logits.data<float>(), targets.data<int32_t>(), n, v, ignore_index);
      break;
  }
  return record(loss, "cross_entropy", {logits_in, targets_in},
                [logits = logits.detach(), targets = targets.detach(), lse, n, v, count, count_dev,
                 ignore_index](const Tensor& g) {
                  Tensor dlogits = Tensor::empty(logits.shape(), DType::f32, g.device());
                  switch (g.device().type) {
                    case DeviceType::cpu: {
                      const float dloss_scale = count ? g.item() / static_cast<float>(count) : 0.f;
                      cpu::cross_entropy_backward(dlogits.data<float>(), logits.data<float>(), lse.data<float>(),
                                                  targets.data<int32_t>(), n, v, ignore_index, dloss_scale);
                      break;
                    }
                    case DeviceType::cuda: {
                      const Tensor gc = g.contiguous_copy();
                      cuda::cross_entropy_backward(g.device(), dlogits.data<float>(), logits.data<float>(),
                                                   lse.data<float>(), targets.data<int32_t>(), gc.data<float>(),
                                                   count_dev.data<float>(), n, v, ignore_index);
                      break;
                    }
                  }
                  return std::vector<Tensor>{dlogits, Tensor()};
                });
}

}  // namespace lmf
