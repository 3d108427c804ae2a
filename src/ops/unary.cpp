// The unary ops of the shared table (kernels/common/op_table.h): neg exp log sqrt rsqrt tanh sigmoid
// silu relu pow. One forward and one backward for all of them; the backward keeps x and y = f(x)
// (views, no copies) because the table's derivatives read whichever is cheaper. A bf16 x gives a
// bf16 y (f32 math either way).
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;
namespace {

// A bf16 x (mixed precision): y = f(x) is stored in bf16, and the backward reads x and that rounded y
// on both devices. CUDA reads and writes the bf16 storage in place; the f32-only CPU kernels get
// widened copies (the CPU's f32 path above is untouched).
Tensor unary_bf16(const char* name, kernels::UnaryOp op, const Tensor& x_in, float p) {
  const Tensor x = x_in.contiguous_copy();
  const Device dev = x.device();
  const int64_t n = x.numel();
  Tensor out;
  if (dev.type == DeviceType::cuda) {
    out = Tensor::empty(x.shape(), DType::bf16, dev);
    if (n > 0) cuda::unary_forward_typed(dev, op, out.raw_data(), x.raw_data(), DType::bf16, p, n);
  } else {
    const Tensor xf = x.to(DType::f32);
    out = Tensor::empty(x.shape(), DType::f32, dev);
    if (n > 0) cpu::unary_forward(op, out.data<float>(), xf.data<float>(), p, n);
    out = out.to(DType::bf16);
  }
  return record(out, name, {x_in}, [op, p, x = x.detach(), y = out.detach()](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    Tensor dx = Tensor::empty(x.shape(), DType::f32, g.device());
    const int64_t n = x.numel();
    if (n == 0) return std::vector<Tensor>{dx};
    if (g.device().type == DeviceType::cuda) {
      cuda::unary_backward_typed(g.device(), op, dx.data<float>(), g.data<float>(), x.raw_data(), y.raw_data(),
                                 DType::bf16, p, n);
    } else {
      const Tensor xf = x.to(DType::f32), yf = y.to(DType::f32);
      cpu::unary_backward(op, dx.data<float>(), g.data<float>(), xf.data<float>(), yf.data<float>(), p, n);
    }
    return std::vector<Tensor>{dx};
  });
}

Tensor unary(const char* name, kernels::UnaryOp op, const Tensor& x_in, float p = 0.f) {
  check_float(name, x_in, "x");
  if (x_in.dtype() != DType::f32) return unary_bf16(name, op, x_in, p);
  const Tensor x = x_in.contiguous_copy();
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  const int64_t n = x.numel();
  if (n > 0) {
    switch (x.device().type) {
      case DeviceType::cpu: cpu::unary_forward(op, out.data<float>(), x.data<float>(), p, n); break;
      case DeviceType::cuda: cuda::unary_forward(x.device(), op, out.data<float>(), x.data<float>(), p, n); break;
    }
  }
  return record(out, name, {x_in}, [op, p, x = x.detach(), y = out.detach()](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    Tensor dx = Tensor::empty(x.shape(), DType::f32, g.device());
    const int64_t n = x.numel();
    if (n > 0) {
      switch (g.device().type) {
        case DeviceType::cpu: cpu::unary_backward(op, dx.data<float>(), g.data<float>(), x.data<float>(), y.data<float>(), p, n); break;
        case DeviceType::cuda: cuda::unary_backward(g.device(), op, dx.data<float>(), g.data<float>(), x.data<float>(), y.data<float>(), p, n); break;
      }
    }
    return std::vector<Tensor>{dx};
  });
}

}  // namespace

Tensor neg(const Tensor& x) { return unary("neg", kernels::UnaryOp::neg, x); }
Tensor exp(const Tensor& x) { return unary("exp", kernels::UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary("log", kernels::UnaryOp::log, x); }
Tensor sqrt(const Tensor& x) { return unary("sqrt", kernels::UnaryOp::sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary("rsqrt", kernels::UnaryOp::rsqrt, x); }
Tensor tanh(const Tensor& x) { return unary("tanh", kernels::UnaryOp::tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary("sigmoid", kernels::UnaryOp::sigmoid, x); }
Tensor silu(const Tensor& x) { return unary("silu", kernels::UnaryOp::silu, x); }
Tensor relu(const Tensor& x) { return unary("relu", kernels::UnaryOp::relu, x); }
Tensor pow(const Tensor& x, float exponent) { return unary("pow", kernels::UnaryOp::pow, x, exponent); }

}  // namespace lmf
