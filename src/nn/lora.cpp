// LoRA adapters on the Linear layers of any CausalLM, found by name ("<layer_prefix(i)>.<target>"): attaching (base frozen, adapters registered on their layer,
// slabs rebuilt) and merging (B·A folded into W in f32 on the CPU, so a merge on any device is as
// exact as the adapted forward). Shapes: IN/OUT are the layer's features, r the rank.
#include "lmforge/nn/lora.h"

#include <algorithm>
#include <cmath>

#include "lmforge/autograd.h"
#include "lmforge/nn/causal_lm.h"
#include "lmforge/nn/linear.h"
#include "lmforge/ops.h"

namespace lmf::nn {

namespace {
// A's draws use their own stream so that adding LoRA never shifts other seeded sequences.
constexpr uint64_t kLoraStream = 0xD1B54A32D192ED03ull;

bool is_target(const LoraOptions& options, const std::string& name) {
  return std::find(options.targets.begin(), options.targets.end(), name) != options.targets.end();
}

// Models hand out their layers read-only. add_lora and merge_lora hold the model non-const and the
// layers are non-const members, so removing the const here is well-defined.
Linear& mutable_target(CausalLM& model, int64_t layer, const std::string& target) {
  return const_cast<Linear&>(lora_target(model, layer, target));
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}
}  // namespace

void LoraOptions::validate() const {
  LMF_CHECK(rank >= 1, "lora.rank must be at least 1, got ", rank);
  LMF_CHECK(alpha > 0.f && std::isfinite(alpha), "lora.alpha must be positive, got ", alpha);
  LMF_CHECK(dropout >= 0.f && dropout < 1.f, "lora.dropout must be in [0, 1), got ", dropout);
  LMF_CHECK(!targets.empty(), "lora.targets must name at least one layer");
  for (std::size_t i = 0; i < targets.size(); ++i)
    LMF_CHECK(std::find(targets.begin(), targets.begin() + static_cast<std::ptrdiff_t>(i),
                        targets[i]) == targets.begin() + static_cast<std::ptrdiff_t>(i),
              "lora.targets: '", targets[i], "' is listed twice");
}

void LoraOptions::validate(const CausalLM& model) const {
  validate();
  const auto known = model.lora_target_names();
  for (const auto& target : targets)
    LMF_CHECK(std::find(known.begin(), known.end(), target) != known.end(), "lora.targets: '", target,
              "' is not one of ", joined(known));
}

const Linear& lora_target(const CausalLM& model, int64_t layer, const std::string& target) {
  const std::string path = model.layer_prefix(layer) + "." + target;
  const auto* linear = dynamic_cast<const Linear*>(model.submodule(path));
  LMF_CHECK(linear, "'", target, "' is not a LoRA target of this ", model.arch(), " model (", path,
            " is not a Linear; targets: ", joined(model.lora_target_names()), ")");
  return *linear;
}

Tensor lora_forward(const LoraAdapter& adapter, const Tensor& x, bool training) {
  Tensor h =
      adapter.dropout > 0.f ? dropout(x, adapter.dropout, training, *adapter.dropout_gen) : x;
  h = linear(h, adapter.A);  // (..., r)
  h = linear(h, adapter.B);  // (..., OUT)
  return scale(h, adapter.scale());
}

bool has_lora(const CausalLM& model) {
  for (int64_t i = 0; i < model.num_layers(); ++i)
    for (const auto& target : model.lora_target_names())
      if (lora_target(model, i, target).lora()) return true;
  return false;
}

std::optional<LoraOptions> lora_options(const CausalLM& model) {
  std::optional<LoraOptions> out;
  std::vector<std::string> targets;
  for (const auto& target : model.lora_target_names()) {
    for (int64_t i = 0; i < model.num_layers(); ++i) {
      const LoraAdapter* a = lora_target(model, i, target).lora();
      if (!a) continue;
      if (!out) out = LoraOptions{a->rank, a->alpha, a->dropout, {}, 0};
      targets.push_back(target);
      break;
    }
  }
  if (out) out->targets = std::move(targets);
  return out;
}

void add_lora(CausalLM& model, const LoraOptions& options) {
  options.validate(model);
  LMF_CHECK(!has_lora(model), "add_lora: the model already has LoRA adapters (merge them first)");
  const Device device = model.slab()->device();
  model.freeze();  // before registering adapters: register_parameter makes them trainable
  Generator gen(options.seed ^ kLoraStream);
  const int64_t r = options.rank;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (const auto& target : model.lora_target_names()) {
      if (!is_target(options, target)) continue;
      Linear& layer = mutable_target(model, i, target);
      const int64_t IN = layer.in_features(), OUT = layer.out_features();
      auto adapter = std::make_unique<LoraAdapter>();
      // PEFT's kaiming_uniform_(a=sqrt(5)) on an (r, IN) weight has bound 1/sqrt(IN).
      const float bound = 1.f / std::sqrt(static_cast<float>(IN));
      adapter->A = Tensor::rand({r, IN}, gen, -bound, bound);  // (r, IN)
      adapter->B = Tensor::zeros({OUT, r});                    // (OUT, r)
      adapter->rank = r;
      adapter->alpha = options.alpha;
      adapter->dropout = options.dropout;
      adapter->dropout_gen = &model.dropout_generator();
      layer.attach_lora(std::move(adapter));
    }
  }
  model.flatten_parameters(device);
}

void merge_lora(CausalLM& model) {
  LMF_CHECK(has_lora(model), "merge_lora: the model has no LoRA adapters");
  const Device device = model.slab()->device();
  NoGradGuard no_grad;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (const auto& target : model.lora_target_names()) {
      Linear& layer = mutable_target(model, i, target);
      if (!layer.lora()) continue;
      const std::unique_ptr<LoraAdapter> adapter = layer.detach_lora();
      // On the CPU: a GPU matmul rounds its operands to bf16, which a merge must not.
      Tensor delta =
          matmul(adapter->B.to(Device::cpu()), adapter->A.to(Device::cpu()));  // (OUT, IN)
      Tensor weight = layer.weight();
      add_(weight, delta.to(weight.device()), adapter->scale());
    }
  }
  model.unfreeze();
  model.flatten_parameters(device);
}

}  // namespace lmf::nn
