// The autograd engine: recording nodes, and the backward walk. The walk orders nodes by an
// iterative depth-first search (deep graphs must not overflow the stack), then runs each node's
// closure once, summing the gradients that reach a node before it runs. The engine owns every
// accumulation: it adds what record() closures return, and hands record_into() closures the
// tensors to write or accumulate into (a parameter's slab view, a gradient it already holds).
#include "lmforge/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "lmforge/ops.h"

namespace lmf {
namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool enabled) { g_grad_enabled = enabled; }

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

bool needs_grad(std::initializer_list<Tensor> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

namespace {

Tensor attach(Tensor output, const char* name, std::vector<Tensor> inputs, BackwardFn backward,
              DestBackwardFn backward_into) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  node->backward_into = std::move(backward_into);
  output.impl()->grad_fn = std::move(node);
  output.impl()->requires_grad = true;
  return output;
}

}  // namespace

Tensor record(Tensor output, const char* name, std::vector<Tensor> inputs, BackwardFn backward) {
  if (!needs_grad(inputs)) return output;
  return attach(std::move(output), name, std::move(inputs), std::move(backward), nullptr);
}

Tensor record_into(Tensor output, const char* name, std::vector<Tensor> inputs, DestBackwardFn backward) {
  if (!needs_grad(inputs)) return output;
  return attach(std::move(output), name, std::move(inputs), nullptr, std::move(backward));
}

namespace {

// Leaf gradients are accumulated in place (parameters' grads are views into the gradient slab);
// the first gradient of a leaf without one is copied, since `g` may alias another tensor. A stale
// gradient (TensorImpl::grad_stale, left by zero_grad) is overwritten, not added to. The engine
// reads impl()->grad, never Tensor::grad(), which would zero a stale gradient first.
void accumulate_leaf(const Tensor& leaf, const Tensor& g) {
  TensorImpl& impl = *leaf.impl();
  if (!impl.grad) {
    impl.grad = g.clone().impl();
  } else {
    Tensor grad(impl.grad);
    if (impl.grad_stale) {
      grad.copy_(g);
    } else {
      add_(grad, g);
    }
  }
  impl.grad_stale = false;
}


// A gradient the engine holds for a non-leaf until its node runs. `owned`: no other tensor
// references it (the engine made it, or a destination-aware backward returned it new), so a later
// contribution may be accumulated into it in place.
struct Pending {
  Tensor grad;
  bool owned = false;
};

// Whether `g` can serve as an in-place destination for a gradient of `input`.
bool is_destination(const Tensor& g, const Tensor& input) {
  return g.defined() && g.dtype() == DType::f32 && g.is_contiguous() && g.device() == input.device() &&
         g.shape() == input.shape();
}

// The destinations the engine hands a record_into backward, one per input: the leaf's gradient
// (accumulate), a new buffer for a leaf's first f32 gradient (write), the owned pending gradient
// of a non-leaf (accumulate), or none (the backward returns a new tensor).
std::vector<GradDest> destinations(const Node& node, std::unordered_map<Node*, Pending>& pending) {
  std::vector<GradDest> dests(node.inputs.size());
  for (std::size_t i = 0; i < dests.size(); ++i) {
    const Tensor& input = node.inputs[i];
    if (!input.defined() || !input.requires_grad()) continue;
    GradDest& d = dests[i];
    d.needed = true;
    // An input passed twice gets a destination once; its second gradient comes back new.
    bool repeated = false;
    for (std::size_t j = 0; j < i && !repeated; ++j) repeated = node.inputs[j].impl() == input.impl();
    if (repeated) continue;
    if (input.impl()->grad_fn) {
      auto it = pending.find(input.impl()->grad_fn.get());
      if (it != pending.end() && it->second.owned && is_destination(it->second.grad, input)) {
        d.tensor = it->second.grad;
        d.accumulate = true;
      }
      continue;
    }
    const Tensor grad(input.impl()->grad);
    if (is_destination(grad, input)) {
      d.tensor = grad;
      d.accumulate = !input.impl()->grad_stale;  // a stale gradient is overwritten whole
    } else if (!grad.defined() && input.dtype() == DType::f32) {
      d.tensor = Tensor::empty(input.shape(), DType::f32, input.device());
    }
  }
  return dests;
}

std::vector<Node*> topological_order(Node* root) {
  std::vector<Node*> order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, std::size_t>> stack{{root, 0}};
  visited.insert(root);
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      const Tensor& input = node->inputs[next++];
      if (input.defined() && input.impl()->grad_fn) {
        Node* child = input.impl()->grad_fn.get();
        if (visited.insert(child).second) stack.emplace_back(child, 0);
      }
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  return {order.rbegin(), order.rend()};  // outputs before inputs
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad_output) { backward(root, grad_output, LeafGradHook()); }

void backward(const Tensor& root, const Tensor& grad_output, const LeafGradHook& on_leaf_grad_final) {
  LMF_CHECK(root.defined(), "backward() on an undefined tensor");
  LMF_CHECK(root.requires_grad(), "backward() on a tensor that does not require grad");
  Tensor seed = grad_output;
  if (!seed.defined()) {
    LMF_CHECK(root.numel() == 1, "backward() without a gradient needs a one-element output, got ",
              shape_str(root.shape()));
    seed = Tensor::ones(root.shape(), DType::f32, root.device());
  }
  LMF_CHECK(seed.shape() == root.shape(), "backward(): gradient of shape ", shape_str(seed.shape()),
            " for an output of shape ", shape_str(root.shape()));
  NoGradGuard no_grad;
  if (root.is_leaf()) {
    accumulate_leaf(root, seed);
    if (on_leaf_grad_final) on_leaf_grad_final(root);
    return;
  }
  std::unordered_map<Node*, Pending> pending;
  Node* root_node = root.impl()->grad_fn.get();
  pending[root_node] = Pending{seed, false};
  const std::vector<Node*> order = topological_order(root_node);
  // With a hook: the edges still to be walked into each leaf that requires grad. A node, run or
  // skipped (no gradient reached it), releases its leaf edges after its accumulations; a leaf
  // whose count reaches zero can receive nothing more.
  std::unordered_map<const TensorImpl*, int64_t> leaf_edges;
  const auto is_grad_leaf = [](const Tensor& t) { return t.defined() && t.requires_grad() && !t.impl()->grad_fn; };
  if (on_leaf_grad_final) {
    for (Node* node : order)
      for (const Tensor& input : node->inputs)
        if (is_grad_leaf(input)) ++leaf_edges[input.impl().get()];
  }
  const auto release_leaf_edges = [&](Node* node) {
    if (!on_leaf_grad_final) return;
    for (const Tensor& input : node->inputs)
      if (is_grad_leaf(input) && --leaf_edges[input.impl().get()] == 0) {
        input.grad();  // no further gradient can reach it: a stale gradient reads as zero now
        on_leaf_grad_final(input);
      }
  };
  for (Node* node : order) {
    auto it = pending.find(node);
    if (it == pending.end()) {
      release_leaf_edges(node);
      continue;
    }
    const Tensor g = std::move(it->second.grad);
    pending.erase(it);
    const bool into = static_cast<bool>(node->backward_into);
    std::vector<GradDest> dests;
    if (into) dests = destinations(*node, pending);
    std::vector<Tensor> grads = into ? node->backward_into(g, dests) : node->backward(g);
    LMF_CHECK(grads.size() == node->inputs.size(), "backward of ", node->name, " returned ",
              grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (std::size_t i = 0; i < grads.size(); ++i) {
      const Tensor& input = node->inputs[i];
      if (!grads[i].defined() || !input.defined() || !input.requires_grad()) continue;
      LMF_CHECK(grads[i].shape() == input.shape(), "backward of ", node->name, ": gradient ", i,
                " has shape ", shape_str(grads[i].shape()), ", input has ", shape_str(input.shape()));
      if (into && dests[i].tensor.defined() && grads[i].impl() == dests[i].tensor.impl()) {
        // Filled in place; a leaf's first gradient becomes its .grad (a stale one already is).
        if (!dests[i].accumulate) {
          input.impl()->grad = dests[i].tensor.impl();
          input.impl()->grad_stale = false;
        }
        continue;
      }
      if (input.impl()->grad_fn) {
        Pending& slot = pending[input.impl()->grad_fn.get()];
        if (slot.grad.defined()) {
          slot.grad = add(slot.grad, grads[i]);
          slot.owned = true;
        } else {
          slot.grad = grads[i];
          slot.owned = into;  // a destination-aware backward's new tensors are its own
        }
      } else if (into && !input.impl()->grad) {
        input.impl()->grad = grads[i].impl();  // new, referenced by nothing else: no copy
      } else {
        accumulate_leaf(input, grads[i]);
      }
    }
    release_leaf_edges(node);
  }
}

void Tensor::backward(const Tensor& grad_output) const { lmf::backward(*this, grad_output); }

}  // namespace lmf
