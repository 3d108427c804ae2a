// The gated MLP of Llama-style decoders: down_proj(silu(gate_proj(x)) * up_proj(x)), with Hugging
// Face's submodule names so checkpoints map by name. No biases by default (`mlp_bias` of HF's Llama).
#pragma once
#include <cstdint>

#include "lmforge/core/rng.h"
#include "lmforge/nn/linear.h"
#include "lmforge/nn/module.h"

namespace lmf::nn {

class SwiGLUMLP : public Module {
 public:
  /// gate_proj, up_proj (C -> I) and down_proj (I -> C), weights ~ N(0, init_std) from `gen`.
  SwiGLUMLP(int64_t hidden_size, int64_t intermediate_size, Generator& gen, bool bias = false,
            float init_std = 0.02f);

  /// x (..., C) -> (..., C); the gate is the fused swiglu op.
  Tensor forward(const Tensor& x) const;

  Linear& gate_proj() { return gate_proj_; }
  Linear& up_proj() { return up_proj_; }
  Linear& down_proj() { return down_proj_; }
  const Linear& gate_proj() const { return gate_proj_; }
  const Linear& up_proj() const { return up_proj_; }
  const Linear& down_proj() const { return down_proj_; }

 private:
  Linear gate_proj_;
  Linear up_proj_;
  Linear down_proj_;
};

}  // namespace lmf::nn
