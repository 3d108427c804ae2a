// AdamW with torch.optim.AdamW semantics over a model's parameter slab. The moments m and v are
// slabs laid out exactly like the parameter slab, so one update loop (or one kernel) covers every
// parameter. Weight decay applies only to tensors of two or more dims (matrices and embeddings).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/core/tensor.h"
#include "lmforge/nn/module.h"

namespace lmf::optim {

class DeviceStep;

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;  ///< applied to parameters with dim() >= 2 only
  /// Throws lmf::Error naming the first out-of-range field.
  void validate() const;
};

/// Per step, for each parameter p with gradient g that requires grad (t = step count after +1):
///   p -= lr · wd · p                      (decoupled decay, before the Adam update; wd 0 for < 2-D)
///   m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
///   p -= lr · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + eps)
/// Frozen parameters (requires_grad false) are skipped entirely, like parameters without a
/// gradient in PyTorch. Groups are decided at construction from each parameter's dims.
/// On a GPU the update reads lr and the bias corrections from a small device buffer written
/// before each step, so a step captured in a CUDA graph (lmforge/core/cuda_graph.h) replays with
/// the current lr and step count: inside a capture, step() registers a hook with the graph that
/// counts the step and writes the buffer before every replay (set_lr first to change the lr).
class AdamW {
 public:
  /// Takes the model's slab (built on first use by nn::Module::slab()); moments start at
  /// zero on the slab's device. Parameters named in `exclude` are left alone (another optimizer,
  /// such as Muon, trains them); their moments stay zero.
  AdamW(const nn::Module& model, AdamWConfig config, const std::vector<std::string>& exclude = {});

  /// One update with the current lr. Throws if the model re-flattened its parameters since.
  /// `grad_scale` multiplies every gradient first, as clip_grad_norm would in place: the clip
  /// factor (clip_factor()) folded into the update, so clipping costs no pass over the slab on
  /// the CPU (bit-identical to clipping first). On a GPU the slab is scaled first.
  void step(float grad_scale = 1.f);
  float lr() const { return config_.lr; }
  void set_lr(float lr) { config_.lr = lr; }
  const AdamWConfig& config() const { return config_; }
  /// On a GPU: the update with the clip factor, the skip verdict and t taken from `control` on the
  /// device (after control.decide()), so nothing is read back; a skipped step leaves parameters
  /// and moments untouched. The gradients are multiplied by the clip factor as they are read (the
  /// gradient slab itself is not scaled). step_count() is not advanced here: the device counts
  /// applied updates, and the caller copies control.applied() in with set_step_count() after a read.
  void step(const DeviceStep& control);
  /// Number of applied updates so far (PyTorch's state['step']).
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t step) { step_ = step; }

  /// Checkpointable state: moments by parameter name (views of the moment slabs) and the step.
  struct State {
    int64_t step = 0;
    nn::StateDict exp_avg;     ///< m, one entry per parameter, same names and shapes
    nn::StateDict exp_avg_sq;  ///< v
  };
  State state() const;
  /// Copies moments into the slabs; every parameter must be present with its shape (errors name
  /// the first missing, unexpected or mis-shaped entry).
  void load_state(const State& state);

  /// ZeRO-1: keep moments for slab elements [begin, end) only and update only those (the other
  /// ranks own the rest; the caller all-gathers the parameters). Moments restart at zero, so call
  /// it before the first step or load_state. state() then throws: gather the shards instead.
  void shard(int64_t begin, int64_t end);
  bool sharded() const { return shard_begin_ != 0 || shard_end_ != slab_->numel(); }
  int64_t shard_begin() const { return shard_begin_; }
  int64_t shard_end() const { return shard_end_; }

  /// (N) f32, same layout as the params; when sharded, (end - begin) holding elements [begin, end).
  const Tensor& exp_avg_slab() const { return m_; }
  const Tensor& exp_avg_sq_slab() const { return v_; }
  /// Whether the parameter at slab entry i is weight-decayed.
  bool decays(std::size_t entry) const { return decay_.at(entry); }

 private:
  void prepare_step();
  void rebuild_runs();
  // GPU: writes lr, lr / bias_correction1 and sqrt(bias_correction2) for step_ into scalars_.
  void write_device_scalars();

  std::shared_ptr<nn::ParameterSlab> slab_;
  AdamWConfig config_;
  std::vector<bool> decay_;     // per slab entry
  std::vector<bool> excluded_;  // per slab entry: trained by another optimizer
  // Runs of adjacent trainable parameters sharing a decay, rebuilt only when freezing changes.
  struct Run {
    int64_t begin, end;
    float weight_decay;
  };
  std::vector<Run> runs_;
  std::vector<bool> runs_trainable_;  // requires_grad per entry when runs_ was built
  Tensor m_;
  Tensor v_;
  int64_t step_ = 0;
  Tensor scalars_;  // GPU only: (3) f32, kernels::AdamWStepScalars, read by the update kernel
  int64_t shard_begin_ = 0, shard_end_ = 0;  // moments cover slab elements [begin, end)
};

}  // namespace lmf::optim
