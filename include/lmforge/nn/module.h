// Module: named parameters and submodules in a stable registration order, train/eval mode, state
// dicts, freezing, and the parameter/gradient slabs. Slabs exist so that the fused optimizer is one
// loop, gradient clipping one reduction and the data-parallel all-reduce a few large buckets.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmf::nn {

/// Ordered name -> tensor pairs (registration order, dotted names such as "h.0.attn.c_attn.weight").
using StateDict = std::vector<std::pair<std::string, Tensor>>;

/// Where one parameter lives inside the slabs.
struct SlabEntry {
  std::string name;
  Tensor param;        ///< the parameter (a view of ParameterSlab::params)
  int64_t offset = 0;  ///< first element inside the slabs
  int64_t numel = 0;
};

/// One contiguous f32 allocation for all parameters and one for their gradients, on one device.
/// Each parameter's TensorImpl points into `params`, and its `.grad` is the matching view of
/// `grads`. Entries start at multiples of kSlabAlign elements (64 bytes, for vector loads); the
/// padding between entries stays zero in both slabs.
struct ParameterSlab {
  static constexpr int64_t kSlabAlign = 16;
  Tensor params;                   ///< (N) f32
  Tensor grads;                    ///< (N) f32
  std::vector<SlabEntry> entries;  ///< in registration order
  /// Set when the owning module re-flattened its parameters (for example after to(device)):
  /// anything still holding this slab (an optimizer) would update storage no longer in use.
  bool retired = false;

  Device device() const { return params.device(); }
  int64_t numel() const { return params.numel(); }
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  // Submodules are registered by address, so modules neither copy nor move.
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Every parameter of this module and its submodules, depth first in registration order.
  StateDict named_parameters() const;
  std::vector<Tensor> parameters() const;
  /// The parameters by name (the tensors themselves, not copies; clone() to snapshot).
  StateDict state_dict() const { return named_parameters(); }
  /// Copies values into the existing parameters (so slab views stay valid), converting dtype and
  /// device. Strict: missing or unexpected names are an error listing them; a shape mismatch is
  /// an error naming the parameter and both shapes. Non-strict: unexpected names are ignored and
  /// missing ones keep their values; shape mismatches are still errors.
  void load_state_dict(const StateDict& state, bool strict = true);
  /// The parameter called `name`; throws lmf::Error naming it when there is none.
  Tensor parameter(const std::string& name) const;
  bool has_parameter(const std::string& name) const;
  /// The submodule at dotted path `name` ("h.3.attn.c_attn"), or nullptr when there is none.
  Module* submodule(const std::string& name) const;
  /// Total number of parameter elements.
  int64_t num_parameters() const;

  /// Sets training mode on this module and every submodule (dropout is active only in training).
  void train(bool training = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Zeroes every parameter's gradient in place (the whole gradient slab when flattened).
  void zero_grad();

  /// Sets requires_grad on every parameter whose name equals `prefix` or starts with
  /// "`prefix`." ("" selects all). Returns how many parameters matched; zero matches is an error
  /// (a misspelt layer name must not silently train everything).
  int64_t set_requires_grad(const std::string& prefix, bool requires_grad);
  int64_t freeze(const std::string& prefix = "") { return set_requires_grad(prefix, false); }
  int64_t unfreeze(const std::string& prefix = "") { return set_requires_grad(prefix, true); }

  /// Moves every parameter into fresh contiguous slabs on `device` (values copied, gradients set
  /// to zeroed slab views). Any previous slab is marked retired. Models call this at the end of
  /// construction; call it again to move the model to another device.
  void flatten_parameters(Device device = Device::cpu());
  /// Same as flatten_parameters(device): moves the model.
  void to(Device device) { flatten_parameters(device); }
  /// The slabs; throws when the parameters were never flattened.
  const std::shared_ptr<ParameterSlab>& slab() const;
  bool is_flattened() const { return slab_ != nullptr; }
  const Tensor& param_slab() const { return slab()->params; }
  const Tensor& grad_slab() const { return slab()->grads; }

 protected:
  /// Registers a parameter (requires_grad is set) and returns it.
  Tensor register_parameter(std::string name, Tensor value);
  /// Unregisters a parameter of this module (not of a submodule); throws when there is none.
  /// The slabs keep its storage until the owning model calls flatten_parameters again.
  void remove_parameter(const std::string& name);
  /// Registers a submodule owned by this module (usually a member); returns it.
  template <class M>
  M& register_module(std::string name, M& module) {
    add_child(std::move(name), &module);
    return module;
  }

 private:
  void add_child(std::string name, Module* child);
  void collect(const std::string& prefix, StateDict& out) const;

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Module*>> children_;
  std::shared_ptr<ParameterSlab> slab_;
  bool training_ = true;
};

}  // namespace lmf::nn
