// Embedding table (V, C): looks up rows by token or position id. GPT ties the language-model head
// to the token table, so the weight is also read directly by GPT::forward.
#pragma once
#include <cstdint>

#include "lmforge/core/rng.h"
#include "lmforge/nn/module.h"

namespace lmf::nn {

class Embedding : public Module {
 public:
  /// weight ~ N(0, init_std) drawn from `gen`.
  Embedding(int64_t num_embeddings, int64_t embedding_dim, Generator& gen, float init_std = 0.02f);

  /// ids (...) of i32 or u16 -> (..., C); an id outside [0, V) is an lmf::Error.
  Tensor forward(const Tensor& ids) const;

  const Tensor& weight() const { return weight_; }  ///< (V, C)
  int64_t num_embeddings() const { return num_embeddings_; }
  int64_t embedding_dim() const { return embedding_dim_; }

 private:
  int64_t num_embeddings_;
  int64_t embedding_dim_;
  Tensor weight_;
};

}  // namespace lmf::nn
