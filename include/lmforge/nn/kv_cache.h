// KVCache: the keys and values of every attention layer of a CausalLM for B sequences of equal
// length, preallocated up to `capacity` positions on the model's device, so decoding allocates
// nothing per token. Attention modules append their new keys and values and read the valid prefix.
// Positions are the outermost dim, so an append writes one contiguous block on any device and the
// prefix is a strided (B, NKV, L, HS) view that the attention op reads in place.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmf::nn {

class KVCache {
 public:
  KVCache() = default;
  /// Storage per layer: (capacity, B, NKV, HS), f32; keys(l) and values(l) view it as
  /// (B, NKV, capacity, HS).
  KVCache(int64_t num_layers, int64_t batch, int64_t n_kv_head, int64_t head_dim, int64_t capacity,
          Device device = Device::cpu());

  int64_t num_layers() const { return static_cast<int64_t>(keys_.size()); }
  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  /// Positions already fed (the same for every sequence of the batch).
  int64_t length() const { return length_; }
  /// Forgets every position; the buffers are kept.
  void clear() { length_ = 0; }

  /// Writes k and v (B, NKV, T_new, HS), any strides, of `layer` at positions [length(),
  /// length() + T_new) and returns (B, NKV, length() + T_new, HS) views of every position written
  /// so far. Throws when it would overflow capacity(). Not recorded for autograd.
  std::pair<Tensor, Tensor> append(int64_t layer, const Tensor& k, const Tensor& v);
  /// Called by the model once every layer has appended a step of `t_new` positions.
  void advance(int64_t t_new);

  /// (B, NKV, capacity, HS) views; positions [0, length()) are valid.
  Tensor keys(int64_t layer) const;
  Tensor values(int64_t layer) const;

 private:
  int64_t batch_ = 0;
  int64_t capacity_ = 0;
  int64_t length_ = 0;
  std::vector<Tensor> keys_;    // per layer (capacity, B, NKV, HS)
  std::vector<Tensor> values_;  // per layer (capacity, B, NKV, HS)
};

}  // namespace lmf::nn
