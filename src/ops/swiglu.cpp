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
  // Kept as stored (bf16 under mixed precision) and widened for each pass.
  const Tensor gate_saved = gate_in.contiguous_copy(), up_saved = up_in.contiguous_copy();
  const Tensor gate = f32_contiguous(gate_saved), up = f32_contiguous(up_saved);
  const int64_t n = gate.numel();
  const DType out_dtype = up_in.dtype() == DType::bf16 ? DType::bf16 : activation_dtype(gate_in);
  Tensor out = Tensor::empty(gate.shape(), DType::f32, gate.device());
  switch (gate.device().type) {
    case DeviceType::cpu:
      cpu::swiglu_forward(out.data<float>(), gate.data<float>(), up.data<float>(), n);
      break;
    case DeviceType::cuda:
      cuda::swiglu_forward(gate.device(), out.data<float>(), gate.data<float>(), up.data<float>(), n);
      break;
  }
  const bool need_gate = gate_in.requires_grad(), need_up = up_in.requires_grad();
  return record(stored_as(out, out_dtype), "swiglu", {gate_in, up_in},
                [gate_saved = gate_saved.detach(), up_saved = up_saved.detach(), n, need_gate,
                 need_up](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();
                  const Tensor gate = f32_contiguous(gate_saved), up = f32_contiguous(up_saved);
                  Tensor dgate = need_gate ? Tensor::empty(g.shape(), DType::f32, g.device()) : Tensor();
                  Tensor dup = need_up ? Tensor::empty(g.shape(), DType::f32, g.device()) : Tensor();
                  float* dgp = need_gate ? dgate.data<float>() : nullptr;
                  float* dup_p = need_up ? dup.data<float>() : nullptr;
                  switch (g.device().type) {
                    case DeviceType::cpu:
                      cpu::swiglu_backward(dgp, dup_p, g.data<float>(), gate.data<float>(), up.data<float>(), n);
                      break;
                    case DeviceType::cuda:
                      cuda::swiglu_backward(g.device(), dgp, dup_p, g.data<float>(), gate.data<float>(),
                                            up.data<float>(), n);
                      break;
                  }
                  return std::vector<Tensor>{dgate, dup};
                });
}

}  // namespace lmf
