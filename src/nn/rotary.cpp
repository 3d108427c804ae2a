// Rotary tables from a Hugging Face-style config. The inverse frequencies follow transformers'
// rules (default, linear, llama3) but are evaluated in double, and so are the angles p * f and their
// cos/sin before rounding to f32: at position 8000 an f32 angle is already off by ~5e-4 rad, more
// than a float64 reference allows, so the tables carry only the final rounding.
#include "lmforge/nn/rotary.h"

#include <cmath>

#include "lmforge/ops.h"

namespace lmf::nn {

void RotaryConfig::validate() const {
  LMF_CHECK(head_dim > 0 && head_dim % 2 == 0, "rotary: head_dim must be positive and even, got ", head_dim);
  LMF_CHECK(theta > 0.0, "rotary: rope_theta must be positive, got ", theta);
  LMF_CHECK(max_positions > 0, "rotary: max_position_embeddings must be positive, got ", max_positions);
  if (scaling.type == RopeScalingType::none) return;
  LMF_CHECK(scaling.factor > 0.0, "rotary: rope_scaling.factor must be positive, got ", scaling.factor);
  if (scaling.type != RopeScalingType::llama3) return;
  LMF_CHECK(scaling.low_freq_factor > 0.0 && scaling.high_freq_factor > scaling.low_freq_factor,
            "rotary: rope_scaling needs 0 < low_freq_factor < high_freq_factor, got ", scaling.low_freq_factor,
            " and ", scaling.high_freq_factor);
  LMF_CHECK(scaling.original_max_position_embeddings > 0,
            "rotary: rope_scaling.original_max_position_embeddings must be positive, got ",
            scaling.original_max_position_embeddings);
}

std::vector<double> rotary_inv_freq(const RotaryConfig& config) {
  config.validate();
  const int64_t half = config.head_dim / 2;
  std::vector<double> f(static_cast<std::size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    f[i] = 1.0 / std::pow(config.theta, static_cast<double>(2 * i) / static_cast<double>(config.head_dim));
  const RopeScaling& s = config.scaling;
  switch (s.type) {
    case RopeScalingType::none:
      break;
    case RopeScalingType::linear:
      for (double& v : f) v /= s.factor;
      break;
    case RopeScalingType::llama3: {
      const double old_len = static_cast<double>(s.original_max_position_embeddings);
      const double low_wavelen = old_len / s.low_freq_factor, high_wavelen = old_len / s.high_freq_factor;
      for (double& v : f) {
        const double wavelen = 2.0 * M_PI / v;
        if (wavelen > low_wavelen) {
          v /= s.factor;  // low frequencies: interpolated
        } else if (wavelen >= high_wavelen) {  // the band between: a smooth blend
          const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
          v = (1.0 - smooth) * v / s.factor + smooth * v;
        }  // high frequencies: unchanged
      }
      break;
    }
  }
  return f;
}

RotaryEmbedding::RotaryEmbedding(const RotaryConfig& config) : config_(config), inv_freq_(rotary_inv_freq(config)) {
  const int64_t half = config.head_dim / 2, positions = config.max_positions;
  std::vector<float> c(static_cast<std::size_t>(positions * half)), s(c.size());
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p) * inv_freq_[i];
      c[p * half + i] = static_cast<float>(std::cos(angle));
      s[p * half + i] = static_cast<float>(std::sin(angle));
    }
  cos_ = register_buffer("cos", Tensor::from_vector(c, {positions, half}));  // (L, HS/2)
  sin_ = register_buffer("sin", Tensor::from_vector(s, {positions, half}));  // (L, HS/2)
}

Tensor RotaryEmbedding::forward(const Tensor& x, int64_t offset) const {
  LMF_CHECK(x.dim() == 4 && x.size(3) == config_.head_dim, "RotaryEmbedding: x must be (B, NH, T, ", config_.head_dim,
            "), got ", shape_str(x.shape()));
  return rotary_embedding(x, cos_, sin_, offset);
}

}  // namespace lmf::nn
