// Linear, Embedding and LayerNorm: thin stateful wrappers over the fused functional ops.
// Initialisation draws come from the caller's generator so that a model is reproducible from a seed.
#include "lmforge/nn/embedding.h"
#include "lmforge/nn/layer_norm.h"
#include "lmforge/nn/linear.h"
#include "lmforge/nn/lora.h"
#include "lmforge/ops.h"

namespace lmf::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen,
               float init_std)
    : in_features_(in_features), out_features_(out_features) {
  LMF_CHECK(in_features > 0 && out_features > 0, "Linear(", in_features, ", ", out_features,
            "): sizes must be positive");
  weight_ = register_parameter("weight",
                               Tensor::randn({out_features, in_features}, gen, 0.f, init_std));
  if (bias) bias_ = register_parameter("bias", Tensor::zeros({out_features}));
}

Linear::~Linear() = default;

Tensor Linear::forward(const Tensor& x) const {
  Tensor y = linear(x, weight_, bias_);  // (..., OUT)
  return lora_ ? add(y, lora_forward(*lora_, x, is_training())) : y;
}

Tensor Linear::forward_gelu(const Tensor& x) const {
  return lora_ ? gelu(forward(x)) : linear_gelu(x, weight_, bias_);
}

void Linear::attach_lora(std::unique_ptr<LoraAdapter> adapter) {
  LMF_CHECK(adapter && !lora_, "Linear::attach_lora: ",
            lora_ ? "already has an adapter" : "null adapter");
  LMF_CHECK(adapter->A.shape() == Shape({adapter->rank, in_features_}) &&
                adapter->B.shape() == Shape({out_features_, adapter->rank}),
            "Linear::attach_lora: A ", shape_str(adapter->A.shape()), " and B ",
            shape_str(adapter->B.shape()), " do not fit a (", out_features_, ", ", in_features_,
            ") layer with rank ", adapter->rank);
  adapter->A = register_parameter("lora_A", adapter->A);
  adapter->B = register_parameter("lora_B", adapter->B);
  lora_ = std::move(adapter);
}

std::unique_ptr<LoraAdapter> Linear::detach_lora() {
  LMF_CHECK(lora_, "Linear::detach_lora: no adapter attached");
  remove_parameter("lora_A");
  remove_parameter("lora_B");
  return std::move(lora_);
}

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim, Generator& gen, float init_std)
    : num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {
  LMF_CHECK(num_embeddings > 0 && embedding_dim > 0, "Embedding(", num_embeddings, ", ",
            embedding_dim, "): sizes must be positive");
  weight_ = register_parameter("weight",
                               Tensor::randn({num_embeddings, embedding_dim}, gen, 0.f, init_std));
}

Tensor Embedding::forward(const Tensor& ids) const { return embedding(weight_, ids); }

LayerNorm::LayerNorm(int64_t features, bool bias, float eps) : eps_(eps) {
  LMF_CHECK(features > 0, "LayerNorm(", features, "): size must be positive");
  weight_ = register_parameter("weight", Tensor::ones({features}));
  if (bias) bias_ = register_parameter("bias", Tensor::zeros({features}));
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight_, bias_, eps_); }

}  // namespace lmf::nn
