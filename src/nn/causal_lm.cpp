// The defaults of the CausalLM interface and the KV cache's bookkeeping.
#include "lmforge/nn/causal_lm.h"

#include "lmforge/autograd.h"
#include "lmforge/nn/kv_cache.h"
#include "lmforge/ops.h"

namespace lmf::nn {

LMOutput CausalLM::forward_with_loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index) const {
  LMF_CHECK(targets.defined() && targets.shape() == ids.shape(), "targets of shape ",
            targets.defined() ? shape_str(targets.shape()) : std::string("(undefined)"),
            " for ids of shape ", shape_str(ids.shape()));
  LMOutput out;
  out.logits = forward(ids);
  out.loss = cross_entropy(out.logits, targets, ignore_index);
  return out;
}

Tensor CausalLM::forward_loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index) const {
  return forward_with_loss(ids, targets, ignore_index).loss;
}

CheckpointName CausalLM::checkpoint_name(const std::string& param_name) const { return {param_name, false}; }

KVCache::KVCache(int64_t num_layers, int64_t batch, int64_t n_kv_head, int64_t head_dim, int64_t capacity,
                 Device device)
    : batch_(batch), capacity_(capacity) {
  LMF_CHECK(num_layers > 0 && batch > 0 && n_kv_head > 0 && head_dim > 0 && capacity > 0,
            "KVCache: layers, batch, heads, head size and capacity must be positive");
  for (int64_t l = 0; l < num_layers; ++l) {
    keys_.push_back(Tensor::zeros({capacity, batch, n_kv_head, head_dim}, DType::f32, device));
    values_.push_back(Tensor::zeros({capacity, batch, n_kv_head, head_dim}, DType::f32, device));
  }
}

namespace {
// (capacity, B, NKV, HS) storage -> (B, NKV, positions, HS) view of positions [0, end).
Tensor heads_view(const Tensor& storage, int64_t end) { return permute(slice(storage, 0, 0, end), {1, 2, 0, 3}); }
}  // namespace

Tensor KVCache::keys(int64_t layer) const { return heads_view(keys_.at(static_cast<std::size_t>(layer)), capacity_); }
Tensor KVCache::values(int64_t layer) const {
  return heads_view(values_.at(static_cast<std::size_t>(layer)), capacity_);
}

std::pair<Tensor, Tensor> KVCache::append(int64_t layer, const Tensor& k, const Tensor& v) {
  LMF_CHECK(layer >= 0 && layer < num_layers(), "KVCache: layer ", layer, " of ", num_layers());
  const Tensor& keys = keys_[static_cast<std::size_t>(layer)];
  const Tensor& values = values_[static_cast<std::size_t>(layer)];
  LMF_CHECK(k.dim() == 4 && k.shape() == v.shape() && k.size(0) == batch_ && k.size(1) == keys.size(2) &&
                k.size(3) == keys.size(3),
            "KVCache: keys of shape ", shape_str(k.shape()), " for a cache of (B, NKV, capacity, HS) ",
            shape_str({batch_, keys.size(2), capacity_, keys.size(3)}));
  const int64_t end = length_ + k.size(2);
  LMF_CHECK(end <= capacity_, "KVCache: ", end, " positions exceed its capacity of ", capacity_);
  NoGradGuard no_grad;  // the cache holds values, not graph nodes
  Tensor kd = slice(keys, 0, length_, end), vd = slice(values, 0, length_, end);  // (T_new, B, NKV, HS)
  kd.copy_(permute(k.detach(), {2, 0, 1, 3}));
  vd.copy_(permute(v.detach(), {2, 0, 1, 3}));
  return {heads_view(keys, end), heads_view(values, end)};
}

void KVCache::advance(int64_t t_new) {
  LMF_CHECK(t_new >= 0 && length_ + t_new <= capacity_, "KVCache: advancing by ", t_new, " past capacity ",
            capacity_);
  length_ += t_new;
}

}  // namespace lmf::nn
