// The autograd engine: recording nodes, and the backward walk. The walk orders nodes by an
// iterative depth-first search (deep graphs must not overflow the stack), then runs each node's
// closure once, summing the gradients that reach a node before it runs.
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

Tensor record(Tensor output, const char* name, std::vector<Tensor> inputs, BackwardFn backward) {
  if (!needs_grad(inputs)) return output;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  output.impl()->grad_fn = std::move(node);
  output.impl()->requires_grad = true;
  return output;
}

namespace {

// Leaf gradients are accumulated in place (parameters' grads are views into the gradient slab);
// the first gradient of a leaf without one is copied, since `g` may alias another tensor.
void accumulate_leaf(const Tensor& leaf, const Tensor& g) {
  Tensor grad = leaf.grad();
  if (!grad.defined()) {
    leaf.impl()->grad = g.clone().impl();
  } else {
    add_(grad, g);
  }
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
  std::unordered_map<Node*, Tensor> pending;
  Node* root_node = root.impl()->grad_fn.get();
  pending[root_node] = seed;
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
      if (is_grad_leaf(input) && --leaf_edges[input.impl().get()] == 0) on_leaf_grad_final(input);
  };
  for (Node* node : order) {
    auto it = pending.find(node);
    if (it == pending.end()) {
      release_leaf_edges(node);
      continue;
    }
    const Tensor g = std::move(it->second);
    pending.erase(it);
    std::vector<Tensor> grads = node->backward(g);
    LMF_CHECK(grads.size() == node->inputs.size(), "backward of ", node->name, " returned ",
              grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (std::size_t i = 0; i < grads.size(); ++i) {
      const Tensor& input = node->inputs[i];
      if (!grads[i].defined() || !input.defined() || !input.requires_grad()) continue;
      LMF_CHECK(grads[i].shape() == input.shape(), "backward of ", node->name, ": gradient ", i,
                " has shape ", shape_str(grads[i].shape()), ", input has ", shape_str(input.shape()));
      if (input.impl()->grad_fn) {
        Tensor& slot = pending[input.impl()->grad_fn.get()];
        slot = slot.defined() ? add(slot, grads[i]) : grads[i];
      } else {
        accumulate_leaf(input, grads[i]);
      }
    }
    release_leaf_edges(node);
  }
}

void Tensor::backward(const Tensor& grad_output) const { lmf::backward(*this, grad_output); }

}  // namespace lmf
