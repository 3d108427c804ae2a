// Define-by-run autograd. Each differentiable op records a Node holding its inputs and a closure
// that captures only what its backward needs (flashlight style). backward() walks the graph in
// reverse topological order; leaf gradients accumulate (+=) across calls until zero_grad(). The
// engine owns that accumulation: a closure returns fresh gradients (record) or fills the
// destinations the engine hands it (record_into).
#pragma once
#include <functional>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmf {

/// Maps the gradient of a node's output to the gradients of its inputs (one entry per input,
/// undefined where an input needs none). Runs with gradient recording off. The engine adds what
/// it returns into the inputs' gradients; the tensors may alias others (a pass-through gradient).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

/// Where a destination-aware backward (record_into) puts the gradient of one input. The engine
/// owns accumulation and chooses, per input:
/// - not `needed`: the input takes no gradient; return an undefined tensor.
/// - `tensor` undefined: allocate a new gradient, write it and return it. It must be a tensor
///   nothing else references (the engine may adopt it as a leaf's .grad and accumulate into it).
/// - `tensor` defined, `accumulate` true: add the gradient into `tensor` (GEMM with beta = 1, a
///   scatter-add) and return `tensor`. It is a leaf's existing gradient (for a parameter, its view
///   into the gradient slab) or a gradient the engine already holds for a non-leaf input.
/// - `tensor` defined, `accumulate` false: write the gradient into `tensor` (every element) and
///   return it; the engine allocated it as the first gradient of a leaf, or it is a parameter's
///   slab view that zero_grad() left stale (TensorImpl::grad_stale).
/// A defined `tensor` is f32, contiguous, on the input's device with the input's shape. Returning
/// a different tensor instead is allowed (the engine then adds it), so a backward may decline a
/// destination it cannot fill in place.
struct GradDest {
  Tensor tensor;
  bool accumulate = false;
  bool needed = false;

  /// The tensor to write or accumulate into: `tensor`, or a new f32 one of `shape` on `device`.
  Tensor output(const Shape& shape, const Device& device) const {
    return tensor.defined() ? tensor : Tensor::empty(shape, DType::f32, device);
  }
};

/// A backward that receives one destination per input (see GradDest) and returns, per input, the
/// tensor holding its gradient: the destination it filled, a new tensor, or undefined.
using DestBackwardFn =
    std::function<std::vector<Tensor>(const Tensor& grad_output, const std::vector<GradDest>& dests)>;

struct Node {
  const char* name = "";
  std::vector<Tensor> inputs;
  BackwardFn backward;          ///< set by record()
  DestBackwardFn backward_into; ///< set by record_into() instead
};

/// Whether ops currently record the graph (thread-local).
bool grad_enabled();
void set_grad_enabled(bool enabled);

/// Turns recording off for its scope (evaluation, generation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// True when recording is on and some input requires a gradient.
bool needs_grad(std::initializer_list<Tensor> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

/// Attaches a node to `output` when needs_grad(inputs); returns output. Closures must capture
/// detached tensors (never `output` itself with its history) so no reference cycle forms.
Tensor record(Tensor output, const char* name, std::vector<Tensor> inputs, BackwardFn backward);
/// record() for a backward that writes or accumulates into the destinations the engine hands it
/// (an op whose kernel can fuse the accumulation: a GEMM with beta = 1, a scatter-add), so a
/// parameter's gradient lands in the gradient slab without a temporary, on every device.
Tensor record_into(Tensor output, const char* name, std::vector<Tensor> inputs, DestBackwardFn backward);

/// Called by backward() with a leaf that requires grad once its gradient for that call is final.
using LeafGradHook = std::function<void(const Tensor& leaf)>;

/// Backpropagates from `root`. Without grad_output, root must hold one element (gradient 1).
void backward(const Tensor& root, const Tensor& grad_output = Tensor());

/// The same, calling `on_leaf_grad_final(leaf)` exactly once for every leaf that requires grad
/// and is an input of the graph, right after its last contribution from this call has been
/// accumulated into leaf.grad() (a leaf reached by several edges, such as a tied weight, fires
/// after the last of them). Leaves fire in the walk's order, so for a layered model the later
/// layers fire first; the order depends only on the graph's structure. A leaf that an edge
/// reaches but no gradient does (an unused branch) still fires, once nothing more can arrive.
/// On a GPU the accumulation has been queued on the device stream, not necessarily finished.
void backward(const Tensor& root, const Tensor& grad_output, const LeafGradHook& on_leaf_grad_final);

}  // namespace lmf
