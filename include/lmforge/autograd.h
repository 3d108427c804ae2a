// Define-by-run autograd. Each differentiable op records a Node holding its inputs and a closure
// that captures only what its backward needs (flashlight style). backward() walks the graph in
// reverse topological order; leaf gradients accumulate (+=) across calls until zero_grad().
#pragma once
#include <functional>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmf {

/// Maps the gradient of a node's output to the gradients of its inputs (one entry per input,
/// undefined where an input needs none). Runs with gradient recording off.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  const char* name = "";
  std::vector<Tensor> inputs;
  BackwardFn backward;
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
