// Rotary position embedding as Hugging Face transformers computes it for Llama-style configs: the
// inverse frequencies of `rope_theta`, optionally rescaled by `rope_scaling` of type "linear" or
// "llama3", and cos/sin tables over every position, kept as non-persistent buffers (like HF's
// inv_freq, they are recomputed from the config and never saved in a checkpoint).
#pragma once
#include <cstdint>
#include <vector>

#include "lmforge/nn/module.h"

namespace lmf::nn {

/// `rope_scaling.rope_type` (or `type`) of a Hugging Face config.
enum class RopeScalingType : uint8_t { none, linear, llama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::none;
  double factor = 1.0;                               ///< linear and llama3
  double low_freq_factor = 1.0;                      ///< llama3
  double high_freq_factor = 4.0;                     ///< llama3
  int64_t original_max_position_embeddings = 8192;   ///< llama3
};

struct RotaryConfig {
  int64_t head_dim = 0;          ///< HS, even; all of it is rotated
  double theta = 10000.0;        ///< `rope_theta`
  int64_t max_positions = 2048;  ///< table length L (`max_position_embeddings`)
  RopeScaling scaling;
  /// Throws lmf::Error naming the first bad field.
  void validate() const;
};

/// The inverse frequencies (HS/2) transformers uses for `config` (its default, linear and
/// _compute_llama3_parameters rules), computed in double:
///   default: 1 / theta^(2i / HS);  linear: default / factor;
///   llama3:  wavelength w = 2π / f; w > L0 / low_freq_factor: f / factor; w < L0 / high_freq_factor: f;
///            between: (1 - s) f / factor + s f with s = (L0 / w - low) / (high - low), L0 the
///            original_max_position_embeddings.
std::vector<double> rotary_inv_freq(const RotaryConfig& config);

class RotaryEmbedding : public Module {
 public:
  /// Builds the tables on the CPU; they move with to(device).
  explicit RotaryEmbedding(const RotaryConfig& config);

  /// x (B, NH, T, HS) (any strides, last dim contiguous: transpose(x, 1, 2) of a (B, T, NH, HS)
  /// projection is fine) rotated at positions [offset, offset + T) -> contiguous (B, NH, T, HS).
  Tensor forward(const Tensor& x, int64_t offset = 0) const;

  const RotaryConfig& config() const { return config_; }
  const std::vector<double>& inv_freq() const { return inv_freq_; }  ///< (HS/2)
  /// cos and sin (L, HS/2) of position p times inv_freq, evaluated in double and stored in f32
  /// (buffers "cos" and "sin", not persistent). HF's cos = cat(cos, cos) over HS is implied.
  const Tensor& cos() const { return cos_; }
  const Tensor& sin() const { return sin_; }

 private:
  RotaryConfig config_;
  std::vector<double> inv_freq_;
  Tensor cos_;
  Tensor sin_;
};

}  // namespace lmf::nn
