// Softmax over the last dim. The backward needs only the output probabilities, so the closure
// keeps a detached handle to them (the same storage, without the output's history).
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

Tensor softmax(const Tensor& x_in) {
  check_f32("softmax", x_in, "x");
  LMF_CHECK(x_in.dim() >= 1, "softmax: x must have at least one dim, got ", shape_str(x_in.shape()));
  const Tensor x = x_in.contiguous_copy();
  const int64_t c = x.size(-1), n = c ? x.numel() / c : 0;
  Tensor y = Tensor::empty(x.shape(), DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::softmax_forward(y.data<float>(), x.data<float>(), n, c); break;
    case DeviceType::cuda: cuda::softmax_forward(x.device(), y.data<float>(), x.data<float>(), n, c); break;
  }
  return record(y, "softmax", {x_in}, [y_saved = y.detach(), n, c](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    Tensor dx = Tensor::empty(y_saved.shape(), DType::f32, g.device());
    switch (g.device().type) {
      case DeviceType::cpu: cpu::softmax_backward(dx.data<float>(), g.data<float>(), y_saved.data<float>(), n, c); break;
      case DeviceType::cuda: cuda::softmax_backward(g.device(), dx.data<float>(), g.data<float>(), y_saved.data<float>(), n, c); break;
    }
    return std::vector<Tensor>{dx};
  });
}

}  // namespace lmf
