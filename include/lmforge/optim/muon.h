// Muon: SGD momentum whose update is orthogonalised by a quintic Newton–Schulz iteration, for the
// 2-D hidden weight matrices of a model (the rest trains with AdamW, which leaves Muon's matrices
// alone when built with their names). The step runs through lmf ops (matmul, elementwise), so it
// works on every backend the ops do; momentum buffers are one compact f32 slab.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/core/tensor.h"
#include "lmforge/nn/module.h"

namespace lmf::nn {
class CausalLM;
}

namespace lmf::optim {

struct MuonConfig {
  float lr = 0.02f;            ///< peak lr of the Muon group (the schedule scales it like AdamW's)
  float momentum = 0.95f;      ///< μ in [0, 1)
  bool nesterov = true;        ///< update from g + μ-weighted buffer (modded-nanogpt) instead of the buffer
  float weight_decay = 0.f;    ///< decoupled: p -= lr · wd · p before the update
  int ns_steps = 5;            ///< Newton–Schulz iterations, >= 1
  /// Throws lmf::Error naming the first out-of-range field.
  void validate() const;
};

/// The parameters Muon trains by default in a CausalLM: every trainable 2-D parameter inside a
/// layer ("<layer_prefix(i)>." prefix: attention and MLP projections), LoRA adapters (".lora_A",
/// ".lora_B") and frozen parameters excluded. Embeddings, the output head, norms and biases are
/// not among them. Call it after freezing (and after add_lora).
std::vector<std::string> muon_parameter_names(const nn::CausalLM& model);

/// Orthogonalises G (rows, cols) f32 with the quintic Newton–Schulz iteration
/// X ← a·X + (b·A + c·A²)·X, A = X·Xᵀ, (a, b, c) = (3.4445, −4.7750, 2.0315), starting from
/// X = G / (‖G‖_F + 1e-7), on Gᵀ when rows > cols (so A is the smaller Gram matrix). Returns a new
/// contiguous (rows, cols) tensor on G's device; records nothing.
Tensor newton_schulz(const Tensor& G, int steps);

/// Per step, for each named parameter P (rows, cols) with gradient G that requires grad:
///   B = μ·B + (1−μ)·G                            (momentum buffer, starts at zero)
///   U = (1−μ)·G + μ·B   (nesterov)   or   U = B
///   O = newton_schulz(U, ns_steps)
///   P -= lr·wd·P;  P -= lr · sqrt(max(1, rows/cols)) · O
/// as Keller Jordan's Muon in modded-nanogpt (and nanochat) does. Frozen parameters are skipped.
class Muon {
 public:
  /// Trains the parameters called `names` (each 2-D and in the model's slab, else lmf::Error).
  Muon(const nn::Module& model, MuonConfig config, const std::vector<std::string>& names);

  /// One update with the current lr. Throws if the model re-flattened its parameters since.
  /// `grad_scale` multiplies every gradient first (the clip factor; see AdamW::step).
  void step(float grad_scale = 1.f);
  float lr() const { return config_.lr; }
  void set_lr(float lr) { config_.lr = lr; }
  const MuonConfig& config() const { return config_; }
  int64_t step_count() const { return step_; }
  /// The names it trains, in slab order.
  std::vector<std::string> names() const;

  /// Checkpointable state: the momentum buffer of each parameter (views of the buffer slab).
  struct State {
    int64_t step = 0;
    nn::StateDict momentum;
  };
  State state() const;
  /// Copies buffers in; every parameter must be present with its shape (errors name the first
  /// missing, unexpected or mis-shaped entry).
  void load_state(const State& state);

 private:
  struct Entry {
    std::size_t slab_entry;  // index into the slab's entries
    int64_t offset;          // first element in momentum_
  };
  std::shared_ptr<nn::ParameterSlab> slab_;
  MuonConfig config_;
  std::vector<Entry> entries_;
  Tensor momentum_;  // (sum of the parameters' numel) f32 on the slab's device
  int64_t step_ = 0;
};

}  // namespace lmf::optim
