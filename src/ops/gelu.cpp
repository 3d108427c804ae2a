// GELU with GPT-2's tanh approximation. The backward keeps x (not the output) because the
// derivative is a function of x. On CUDA a bf16 x is read in place by the kernel; the CPU kernel
// is f32-only, so there a bf16 x is widened per pass.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

Tensor gelu(const Tensor& x_in) {
  check_float("gelu", x_in, "x");
  const Tensor x_saved = x_in.contiguous_copy();  // bf16 under mixed precision
  const DType out_dtype = activation_dtype(x_in);
  const Device dev = x_saved.device();
  const int64_t n = x_saved.numel();
  Tensor out;
  if (dev.type == DeviceType::cuda) {
    // Native: x read as stored and out written in its dtype, f32 math in registers.
    out = Tensor::empty(x_saved.shape(), out_dtype, dev);
    cuda::gelu_forward_typed(dev, out.raw_data(), out_dtype, x_saved.raw_data(), x_saved.dtype(), n);
  } else {
    const Tensor x = f32_contiguous(x_saved);  // a bf16 x widened for the f32 CPU kernel
    out = Tensor::empty(x.shape(), DType::f32, dev);
    cpu::gelu_forward(out.data<float>(), x.data<float>(), n);
    out = stored_as(out, out_dtype);
  }
  return record(out, "gelu", {x_in}, [x_saved = x_saved.detach()](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    const int64_t n = x_saved.numel();
    Tensor dx = Tensor::empty(x_saved.shape(), DType::f32, g.device());
    if (g.device().type == DeviceType::cuda) {
      cuda::gelu_backward_typed(g.device(), dx.data<float>(), g.data<float>(), x_saved.raw_data(), x_saved.dtype(), n);
    } else {
      const Tensor x = f32_contiguous(x_saved);
      cpu::gelu_backward(dx.data<float>(), g.data<float>(), x.data<float>(), n);
    }
    return std::vector<Tensor>{dx};
  });
}

}  // namespace lmf
