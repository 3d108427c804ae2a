// One cached decoding step over any CausalLM: the model's own forward with its KV cache, outside
// autograd, keeping only the last position's logits. The ids go to the model's device and the
// logits come back to the CPU, where sampling runs.
#include "lmforge/autograd.h"
#include "lmforge/generate/generate.h"
#include "lmforge/ops.h"

namespace lmf::generate {
namespace {

Device model_device(const nn::CausalLM& model) {
  const auto params = model.parameters();
  return params.empty() ? Device::cpu() : params.front().device();
}

}  // namespace

Tensor forward_step(const nn::CausalLM& model, nn::KVCache& cache, const Tensor& ids) {
  LMF_CHECK(ids.dim() == 2 && ids.size(1) >= 1, "forward_step: ids must be (B, T_new) with T_new >= 1, got ",
            shape_str(ids.shape()));
  LMF_CHECK(ids.size(0) == cache.batch(), "forward_step: ids of batch ", ids.size(0), " for a KV cache of batch ",
            cache.batch());
  NoGradGuard no_grad;
  const Device device = model_device(model);
  const Tensor on_device = ids.device() == device ? ids : ids.contiguous_copy().to(device);
  const Tensor logits = model.forward(on_device, &cache);  // (B, T_new, V)
  const int64_t b = logits.size(0), t = logits.size(1), v = logits.size(2);
  return reshape(slice(logits, 1, t - 1, t), {b, v}).to(Device::cpu());  // (B, V)
}

std::vector<float> forward_step(const nn::CausalLM& model, nn::KVCache& cache, const std::vector<int32_t>& ids) {
  const Tensor logits =
      forward_step(model, cache, Tensor::from_vector(ids, {1, static_cast<int64_t>(ids.size())}));
  return logits.to_vector();
}

}  // namespace lmf::generate
