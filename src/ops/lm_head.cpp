// The output head and its cross-entropy fused over chunks of rows: loss = cross_entropy(x · Wᵀ,
// targets) without ever holding the (N, V) logits. Each chunk of `chunk` rows gets its logits
// (chunk, V) in one reused workspace, from which the per-row log-sum-exp (N) is kept; the backward
// recomputes each chunk's logits (one more GEMM than the unfused graph: 4 products instead of 3,
// for memory that no longer grows with N·V), turns them into dlogits in place, and adds that
// chunk's dx rows and dW. With a single chunk (chunk <= 0 or >= N) the forward's logits are kept
// and reused instead: the unfused graph's cost and memory. Device-generic: it calls the backends' GEMM and cross-entropy kernels,
// so the CPU and CUDA paths are the same sequence, and nothing is read back to the host apart
// from the targets' id check (the same one cross_entropy does).
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/autograd.h"
#include "lmforge/core/compute.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

namespace {

// c (M, N) = op(a) · op(b) (+= when accumulate), on the operands' device.
void gemm_on(Device dev, const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, bool trans_a,
             bool trans_b, bool accumulate, const ComputeOptions& options) {
  switch (dev.type) {
    case DeviceType::cpu:
      cpu::gemm(a, b, c, m, n, k, trans_a, trans_b, accumulate, nullptr, options);
      break;
    case DeviceType::cuda:
      cuda::gemm(dev, a, b, c, m, n, k, trans_a, trans_b, accumulate, nullptr, options);
      break;
  }
}

}  // namespace

Tensor lm_head_cross_entropy(const Tensor& x_in, const Tensor& w_in, const Tensor& targets_in, int32_t ignore_index,
                             int64_t chunk) {
  const char* op = "lm_head_cross_entropy";
  check_f32(op, x_in, "x");
  check_f32(op, w_in, "w");
  check_defined(op, targets_in, "targets");
  check_same_device(op, x_in, "x", w_in, "w");
  check_same_device(op, x_in, "x", targets_in, "targets");
  LMF_CHECK(targets_in.dtype() == DType::i32, op, ": targets must be i32, got ", dtype_name(targets_in.dtype()));
  LMF_CHECK(w_in.dim() == 2, op, ": w must be (V, C), got ", shape_str(w_in.shape()));
  LMF_CHECK(x_in.dim() >= 2 && x_in.size(-1) == w_in.size(1), op, ": x ", shape_str(x_in.shape()),
            " must be (N, C) or (B, T, C) with C = w's ", w_in.size(1));
  const Shape& xs = x_in.shape();
  LMF_CHECK(Shape(xs.begin(), xs.end() - 1) == targets_in.shape(), op, ": x ", shape_str(xs),
            " does not match targets ", shape_str(targets_in.shape()), " (targets are x's shape without C)");
  const int64_t v = w_in.size(0), c = w_in.size(1), n = targets_in.numel();
  LMF_CHECK(v > 0, op, ": empty vocabulary in w ", shape_str(w_in.shape()));
  chunk = chunk <= 0 ? std::max<int64_t>(n, 1) : std::min(chunk, std::max<int64_t>(n, 1));
  const Tensor x = x_in.contiguous_copy(), w = w_in.contiguous_copy(), targets = targets_in.contiguous_copy();
  const Device dev = x.device();
  const ComputeOptions options = compute_options();  // the backward runs with the forward's settings
  switch (dev.type) {
    case DeviceType::cpu:
      cpu::check_ids_i32("lm_head_cross_entropy: target", targets.data<int32_t>(), n, v, ignore_index);
      break;
    case DeviceType::cuda:
      cuda::check_ids_i32(dev, "lm_head_cross_entropy: target", targets.data<int32_t>(), n, v, ignore_index);
      break;
  }

  const int64_t chunks = (n + chunk - 1) / chunk;
  Tensor lse = Tensor::empty({n}, DType::f32, dev);                  // (N)
  Tensor chunk_loss = Tensor::zeros({std::max<int64_t>(chunks, 1)}, DType::f32, dev);  // mean per chunk
  Tensor chunk_count = Tensor::zeros({std::max<int64_t>(chunks, 1)}, DType::f32, dev);
  // One chunk: its logits are kept for the backward (no recompute; the unfused graph's memory).
  Tensor kept_logits;
  {
    Tensor logits = Tensor::empty({chunk, v}, DType::f32, dev);  // (chunk, V), reused
    if (chunks == 1) kept_logits = logits;
    for (int64_t i = 0; i < chunks; ++i) {
      const int64_t r0 = i * chunk, rows = std::min(chunk, n - r0);
      gemm_on(dev, x.data<float>() + r0 * c, w.data<float>(), logits.data<float>(), rows, v, c, false, true, false,
              options);
      float* loss_i = chunk_loss.data<float>() + i;
      float* count_i = chunk_count.data<float>() + i;
      switch (dev.type) {
        case DeviceType::cpu:
          cpu::cross_entropy_forward(loss_i, count_i, lse.data<float>() + r0, logits.data<float>(),
                                     targets.data<int32_t>() + r0, rows, v, ignore_index);
          break;
        case DeviceType::cuda:
          cuda::cross_entropy_forward(dev, loss_i, count_i, lse.data<float>() + r0, logits.data<float>(),
                                      targets.data<int32_t>() + r0, rows, v, ignore_index);
          break;
      }
    }
  }
  // loss = Σ chunk mean · chunk count / max(count, 1), on the device (0 when every row is ignored).
  Tensor loss, count;
  {
    const NoGradGuard no_grad;
    count = sum(chunk_count);
    const Tensor one = Tensor::ones({}, DType::f32, dev);
    loss = div(sum(mul(chunk_loss, chunk_count)), add(relu(sub(count, one)), one)).contiguous_copy();
    count = count.contiguous_copy();
  }
  return record(loss, op, {x_in, w_in, targets_in},
                [x = x.detach(), w = w.detach(), targets = targets.detach(), lse, count, n, v, c, chunk, ignore_index,
                 options, xs, kept_logits](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // () on the device
                  const Device dev = g.device();
                  Tensor dx = Tensor::empty(xs, DType::f32, dev);
                  Tensor dw = Tensor::zeros({v, c}, DType::f32, dev);
                  // With one chunk the forward's logits become dlogits in place (the closure runs once).
                  Tensor dlogits = kept_logits.defined() ? kept_logits : Tensor::empty({chunk, v}, DType::f32, dev);
                  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
                    const int64_t rows = std::min(chunk, n - r0);
                    float* dl = dlogits.data<float>();
                    // The chunk's logits again, then (softmax - onehot) · g / count in place.
                    if (!kept_logits.defined())
                      gemm_on(dev, x.data<float>() + r0 * c, w.data<float>(), dl, rows, v, c, false, true, false,
                              options);
                    switch (dev.type) {
                      case DeviceType::cpu:
                        cpu::cross_entropy_backward(dl, dl, lse.data<float>() + r0, targets.data<int32_t>() + r0,
                                                    g.data<float>(), count.data<float>(), rows, v, ignore_index);
                        break;
                      case DeviceType::cuda:
                        cuda::cross_entropy_backward(dev, dl, dl, lse.data<float>() + r0,
                                                     targets.data<int32_t>() + r0, g.data<float>(),
                                                     count.data<float>(), rows, v, ignore_index);
                        break;
                    }
                    // dx rows (rows, C) = dlogits · W; dW (V, C) += dlogitsᵀ · x rows.
                    gemm_on(dev, dl, w.data<float>(), dx.data<float>() + r0 * c, rows, c, v, false, false, false,
                            options);
                    gemm_on(dev, dl, x.data<float>() + r0 * c, dw.data<float>(), v, c, rows, true, false, true,
                            options);
                  }
                  if (n == 0) dx.zero_();
                  return std::vector<Tensor>{dx, dw, Tensor()};
                });
}

}  // namespace lmf
