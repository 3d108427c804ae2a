// The SwiGLU gate: out = silu(gate) * up, silu(g) = g * sigmoid(g) (Hugging Face's act_fn(gate_proj(x))
// * up_proj(x) of Llama-style MLPs), elementwise on (N) = (B, T, I).
// Gradient (s = sigmoid(g)): dgate = dout * up * s * (1 + g (1 - s)), dup = dout * g * s.
// Eigen's packet exp over fixed vec::Block lanes (SIMD, alignment-independent, see vec_math.h).
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {
namespace {
// Elements per work item, as in gelu.cpp.
constexpr int64_t kBlock = 4096;

inline vec::Block sigmoid(const vec::Block& g) { return 1.0f / (1.0f + (-g).exp()); }
}  // namespace

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kBlock, end = std::min(n, i0 + kBlock);
    for (int64_t i = i0; i < end; i += vec::kLanes) {
      const int64_t lanes = std::min(vec::kLanes, end - i);
      const vec::Block g = vec::load(gate + i, lanes, 0.f), u = vec::load(up + i, lanes, 0.f);
      vec::store(out + i, g * sigmoid(g) * u, lanes);
    }
  }
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kBlock, end = std::min(n, i0 + kBlock);
    for (int64_t i = i0; i < end; i += vec::kLanes) {
      const int64_t lanes = std::min(vec::kLanes, end - i);
      const vec::Block g = vec::load(gate + i, lanes, 0.f), u = vec::load(up + i, lanes, 0.f);
      const vec::Block d = vec::load(dout + i, lanes, 0.f), s = sigmoid(g);
      if (dgate) vec::store(dgate + i, d * u * s * (1.0f + g * (1.0f - s)), lanes);
      if (dup) vec::store(dup + i, d * g * s, lanes);
    }
  }
}

}  // namespace lmf::cpu
