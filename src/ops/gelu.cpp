// GELU with GPT-2's tanh approximation. The backward keeps x (not the output) because the
// derivative is a function of x.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

Tensor gelu(const Tensor& x_in) {
  check_float("gelu", x_in, "x");
  const Tensor x_saved = x_in.contiguous_copy();  // bf16 under mixed precision, widened per pass
  const Tensor x = f32_contiguous(x_saved);
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::gelu_forward(out.data<float>(), x.data<float>(), x.numel()); break;
    case DeviceType::cuda: cuda::gelu_forward(x.device(), out.data<float>(), x.data<float>(), x.numel()); break;
  }
  return record(stored_as(out, activation_dtype(x_in)), "gelu", {x_in}, [x_saved = x_saved.detach()](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    const Tensor x = f32_contiguous(x_saved);
    Tensor dx = Tensor::empty(x.shape(), DType::f32, g.device());
    switch (g.device().type) {
      case DeviceType::cpu: cpu::gelu_backward(dx.data<float>(), g.data<float>(), x.data<float>(), x.numel()); break;
      case DeviceType::cuda: cuda::gelu_backward(g.device(), dx.data<float>(), g.data<float>(), x.data<float>(), x.numel()); break;
    }
    return std::vector<Tensor>{dx};
  });
}

}  // namespace lmf
