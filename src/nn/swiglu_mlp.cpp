// SwiGLU MLP: two projections up, the fused gate, one projection down.
#include "lmforge/nn/swiglu_mlp.h"

#include "lmforge/ops.h"

namespace lmf::nn {

SwiGLUMLP::SwiGLUMLP(int64_t hidden_size, int64_t intermediate_size, Generator& gen, bool bias, float init_std)
    : gate_proj_(hidden_size, intermediate_size, bias, gen, init_std),
      up_proj_(hidden_size, intermediate_size, bias, gen, init_std),
      down_proj_(intermediate_size, hidden_size, bias, gen, init_std) {
  register_module("gate_proj", gate_proj_);
  register_module("up_proj", up_proj_);
  register_module("down_proj", down_proj_);
}

Tensor SwiGLUMLP::forward(const Tensor& x) const {
  return down_proj_.forward(swiglu(gate_proj_.forward(x), up_proj_.forward(x)));  // (..., I) -> (..., C)
}

}  // namespace lmf::nn
