// Module: named parameters, buffers and submodules in a stable registration order, train/eval mode,
// state dicts, freezing, and the parameter/gradient slabs. Slabs exist so that the fused optimizer is
// one loop, gradient clipping one reduction and the data-parallel all-reduce a few large buckets;
// the library builds them on first use, so a model assembled from modules needs no extra call.
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
  /// (N) bf16 copy of `params` for mixed precision; undefined until Module::refresh_bf16_copies.
  Tensor params_bf16;
  std::vector<SlabEntry> entries;  ///< in registration order
  /// Set when the owning module re-flattened its parameters (after to(device), or lazily after a
  /// parameter or submodule was registered or removed):
  /// anything still holding this slab (an optimizer) would update storage no longer in use.
  bool retired = false;

  Device device() const { return params.device(); }
  int64_t numel() const { return params.numel(); }

  /// (N) f32: every parameter's gradient. Module::zero_grad() does not clear it; it marks each
  /// parameter's gradient stale, the next backward writes (not adds) the first gradient of each
  /// parameter it reaches, and this accessor zeroes the entries no backward reached before
  /// returning. Read gradients through it (or Tensor::grad()), never through a pointer kept from
  /// before the backward.
  const Tensor& grads() const;
  /// The gradient slab as it is, stale entries and all: for code that reads only entries it
  /// knows a backward has finished (the data-parallel buckets, from the engine's leaf hook).
  const Tensor& grads_as_is() const { return grads_; }
  /// Marks every entry's gradient stale (Module::zero_grad).
  void mark_grads_stale();

 private:
  friend class Module;
  Tensor grads_;                   // (N) f32
  mutable bool maybe_stale_ = false;  // some entry may be stale: grads() checks them
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
  /// Every buffer of this module and its submodules (persistent or not), depth first.
  StateDict named_buffers() const;
  /// The buffer called `name` (dotted); throws lmf::Error naming it when there is none.
  Tensor buffer(const std::string& name) const;
  /// The parameters and the persistent buffers by name, parameters first (the tensors themselves,
  /// not copies; clone() to snapshot). Non-persistent buffers (tables a module recomputes from its
  /// configuration, such as rotary cos/sin) are never part of it, so never part of a checkpoint.
  StateDict state_dict() const;
  /// Copies values into the existing parameters and persistent buffers (so slab views stay
  /// valid), converting dtype and device. Strict: missing or unexpected names are an error listing
  /// them; a shape mismatch is an error naming the tensor and both shapes. Non-strict: unexpected
  /// names are ignored and missing ones keep their values; shape mismatches are still errors.
  void load_state_dict(const StateDict& state, bool strict = true);

  /// This module (named "") and every submodule, depth first in registration order, with dotted
  /// names ("h.0", "h.0.attn", ...).
  std::vector<std::pair<std::string, Module*>> named_modules();
  std::vector<std::pair<std::string, const Module*>> named_modules() const;
  bool has_submodule(const std::string& name) const { return submodule(name) != nullptr; }
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

  /// Zeroes every parameter's gradient. With a slab (the usual case) nothing is written: each
  /// gradient is marked stale, the next backward writes it instead of adding to it, and reading it
  /// (Tensor::grad(), ParameterSlab::grads()) first zeroes one no backward reached.
  void zero_grad();

  /// Sets requires_grad on every parameter whose name equals `prefix` or starts with
  /// "`prefix`." ("" selects all). Returns how many parameters matched; zero matches is an error
  /// (a misspelt layer name must not silently train everything).
  int64_t set_requires_grad(const std::string& prefix, bool requires_grad);
  int64_t freeze(const std::string& prefix = "") { return set_requires_grad(prefix, false); }
  int64_t unfreeze(const std::string& prefix = "") { return set_requires_grad(prefix, true); }

  /// Moves every parameter into fresh contiguous slabs on `device` (values copied; gradients
  /// become slab views, carrying over any gradient a parameter already had, zero otherwise) and
  /// every buffer to `device`. Any previous slab is marked retired. Nobody has to call this: slab()
  /// flattens on first use; call it (or to()) to move the model to another device.
  void flatten_parameters(Device device = Device::cpu());
  /// Same as flatten_parameters(device): moves the model.
  void to(Device device) { flatten_parameters(device); }
  /// The slabs. Built on first use (on the device the parameters are on) and rebuilt, on the same
  /// device, when parameters or submodules were registered or removed anywhere in the module tree
  /// since (the old slab is then retired). Checking costs one integer comparison when nothing
  /// changed. Throws when the parameters sit on different devices or are not f32.
  const std::shared_ptr<ParameterSlab>& slab() const;
  /// Whether a slab has been built (it may be due for a rebuild; slab() takes care of that).
  bool is_flattened() const { return slab_ != nullptr; }
  const Tensor& param_slab() const { return slab()->params; }
  /// Mixed precision (`run.precision: bf16`): writes the bf16 copy of the parameter slab (one
  /// conversion pass, round to nearest even) and points each matrix parameter (2-D) at its part
  /// of it (TensorImpl::bf16_copy), which linear and matmul then read under
  /// ComputeOptions::mixed_bf16. The f32 parameters stay the master copy (optimizer, checkpoints).
  /// Call again after every change to the parameters: the trainer does after each optimizer step
  /// and after loading a checkpoint. Rebuilding the slab (to(), new parameters) drops the copies.
  void refresh_bf16_copies();
  /// Forgets the bf16 copies (products then round the f32 weights, as without mixed precision).
  void clear_bf16_copies();
  const Tensor& grad_slab() const { return slab()->grads(); }

 protected:
  /// Registers a parameter (requires_grad is set) and returns it.
  Tensor register_parameter(std::string name, Tensor value);
  /// Unregisters a parameter of this module (not of a submodule); throws when there is none.
  /// The slabs keep its storage until the owning model calls flatten_parameters again.
  void remove_parameter(const std::string& name);
  /// Registers a buffer: a tensor the module uses but does not train (requires_grad off, never in
  /// the slabs, any dtype). Buffers move with to(device); handles to them follow the move.
  /// Persistent buffers are part of state_dict() and load_state_dict(); non-persistent ones are not.
  Tensor register_buffer(std::string name, Tensor value, bool persistent = false);
  /// Registers a submodule owned by this module (usually a member); returns it.
  template <class M>
  M& register_module(std::string name, M& module) {
    add_child(std::move(name), &module);
    return module;
  }

 private:
  void add_child(std::string name, Module* child);
  void collect(const std::string& prefix, StateDict& out) const;
  void collect_buffers(const std::string& prefix, bool persistent_only, StateDict& out) const;
  void collect_modules(const std::string& prefix, std::vector<std::pair<std::string, const Module*>>& out) const;
  void build_slab(Device device) const;
  bool slab_matches() const;

  struct Buffer {
    std::string name;
    Tensor value;
    bool persistent;
  };
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
  // The slab is a cache of the parameters' layout, built and checked by the const slab().
  mutable std::shared_ptr<ParameterSlab> slab_;
  mutable uint64_t slab_generation_ = 0;  // the module-tree generation the slab was checked at
  bool training_ = true;
};

}  // namespace lmf::nn
