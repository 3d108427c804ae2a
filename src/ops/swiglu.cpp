// The SwiGLU gate silu(gate) * up of Llama-style MLPs as one elementwise op: one pass instead of
// silu, a temporary and mul, and a backward that reads gate and up once.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

Tensor swiglu(const Tensor& gate_in, const Tensor& up_in) {
  check_float("swiglu", gate_in, "gate");
  check_float("swiglu", up_in, "up");
  check_same_device("swiglu", gate_in, "gate", up_in, "up");
  LMF_CHECK(gate_in.shape() == up_in.shape(), "swiglu: gate ", shape_str(gate_in.shape()), " and up ",
            shape_str(up_in.shape()), " must have the same shape");
  // Kept as stored (bf16 under mixed precision): read in place on CUDA, widened per pass on the CPU.
  const Tensor gate_saved = gate_in.contiguous_copy(), up_saved = up_in.contiguous_copy();
  const int64_t n = gate_saved.numel();
  const Device dev = gate_saved.device();
  const DType out_dtype = up_in.dtype() == DType::bf16 ? DType::bf16 : activation_dtype(gate_in);
  Tensor out;
  if (dev.type == DeviceType::cuda) {
    out = Tensor::empty(gate_saved.shape(), out_dtype, dev);
    cuda::swiglu_forward_typed(dev, out.raw_data(), out_dtype, gate_saved.raw_data(), gate_saved.dtype(),
                               up_saved.raw_data(), up_saved.dtype(), n);
  } else {
    const Tensor gate = f32_contiguous(gate_saved), up = f32_contiguous(up_saved);
    out = Tensor::empty(gate.shape(), DType::f32, dev);
    cpu::swiglu_forward(out.data<float>(), gate.data<float>(), up.data<float>(), n);
    out = stored_as(out, out_dtype);
  }
  const bool need_gate = gate_in.requires_grad(), need_up = up_in.requires_grad();
  return record(out, "swiglu", {gate_in, up_in},
                [gate_saved = gate_saved.detach(), up_saved = up_saved.detach(), n, need_gate,
                 need_up](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();
                  Tensor dgate = need_gate ? Tensor::empty(g.shape(), DType::f32, g.device()) : Tensor();
                  Tensor dup = need_up ? Tensor::empty(g.shape(), DType::f32, g.device()) : Tensor();
                  float* dgp = need_gate ? dgate.data<float>() : nullptr;
                  float* dup_p = need_up ? dup.data<float>() : nullptr;
                  if (g.device().type == DeviceType::cuda) {
                    cuda::swiglu_backward_typed(g.device(), dgp, dup_p, g.data<float>(), gate_saved.raw_data(),
                                                gate_saved.dtype(), up_saved.raw_data(), up_saved.dtype(), n);
                  } else {
                    const Tensor gate = f32_contiguous(gate_saved), up = f32_contiguous(up_saved);
                    cpu::swiglu_backward(dgp, dup_p, g.data<float>(), gate.data<float>(), up.data<float>(), n);
                  }
                  return std::vector<Tensor>{dgate, dup};
                });
}

}  // namespace lmf
