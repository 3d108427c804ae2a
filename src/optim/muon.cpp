// Muon over named 2-D parameters of a slab. The momentum buffers sit in one compact slab of their
// own; the Newton–Schulz iteration is written with lmf ops (three GEMMs per iteration on the
// smaller Gram side), so the CPU's GEMM does the work and any backend with matmul runs it as is.
#include "lmforge/optim/muon.h"

#include <cmath>
#include <unordered_map>

#include "lmforge/autograd.h"
#include "lmforge/nn/causal_lm.h"
#include "lmforge/ops.h"

namespace lmf::optim {
namespace {

// Keller Jordan's quintic coefficients: the largest slope at zero for which five iterations still
// bring every singular value into roughly [0.7, 1.2].
constexpr float kA = 3.4445f, kB = -4.7750f, kC = 2.0315f;
constexpr float kNormEps = 1e-7f;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void MuonConfig::validate() const {
  LMF_CHECK(lr >= 0.f && std::isfinite(lr), "training.muon_lr must be finite and >= 0, got ", lr);
  LMF_CHECK(momentum >= 0.f && momentum < 1.f, "training.muon_momentum must be in [0, 1), got ", momentum);
  LMF_CHECK(weight_decay >= 0.f && std::isfinite(weight_decay), "training.muon_weight_decay must be >= 0, got ",
            weight_decay);
  LMF_CHECK(ns_steps >= 1 && ns_steps <= 100, "training.muon_ns_steps must be in [1, 100], got ", ns_steps);
}

std::vector<std::string> muon_parameter_names(const nn::CausalLM& model) {
  std::vector<std::string> prefixes;
  for (int64_t i = 0; i < model.num_layers(); ++i) prefixes.push_back(model.layer_prefix(i) + ".");
  std::vector<std::string> names;
  for (const auto& [name, param] : model.named_parameters()) {
    // Frozen matrices (a LoRA base, finetune.freeze) would only hold momentum buffers that never move.
    if (param.dim() != 2 || !param.requires_grad() || ends_with(name, ".lora_A") || ends_with(name, ".lora_B"))
      continue;
    for (const auto& prefix : prefixes) {
      if (name.rfind(prefix, 0) == 0) {
        names.push_back(name);
        break;
      }
    }
  }
  return names;
}

Tensor newton_schulz(const Tensor& G, int steps) {
  LMF_CHECK(G.dim() == 2 && G.dtype() == DType::f32, "newton_schulz: expected a 2-D f32 matrix, got ",
            shape_str(G.shape()));
  LMF_CHECK(steps >= 1, "newton_schulz: steps must be >= 1, got ", steps);
  NoGradGuard no_grad;
  const bool tall = G.size(0) > G.size(1);
  Tensor X = contiguous(tall ? transpose(G, 0, 1) : G);  // (r, c) with r <= c
  // Divided by a device scalar: the norm is never read by the host, so a GPU step does not wait.
  const Tensor norm = sqrt(sum(mul(X, X)));
  X = div(X, add(norm, Tensor::full({}, kNormEps, DType::f32, X.device())));
  for (int i = 0; i < steps; ++i) {
    const Tensor A = matmul(X, X, false, true);                  // (r, r)
    const Tensor B = add(scale(A, kB), scale(matmul(A, A), kC));  // (r, r)
    X = add(scale(X, kA), matmul(B, X));                          // (r, c)
  }
  return tall ? contiguous(transpose(X, 0, 1)) : X;
}

Muon::Muon(const nn::Module& model, MuonConfig config, const std::vector<std::string>& names)
    : slab_(model.slab()), config_(config) {
  config_.validate();
  std::unordered_map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < slab_->entries.size(); ++i) index[slab_->entries[i].name] = i;
  std::vector<bool> chosen(slab_->entries.size(), false);
  for (const auto& name : names) {
    const auto it = index.find(name);
    LMF_CHECK(it != index.end(), "Muon: the model has no parameter '", name, "'");
    LMF_CHECK(!chosen[it->second], "Muon: parameter '", name, "' named twice");
    const Tensor& p = slab_->entries[it->second].param;
    LMF_CHECK(p.dim() == 2, "Muon: parameter '", name, "' has shape ", shape_str(p.shape()),
              "; Muon trains 2-D matrices only");
    chosen[it->second] = true;
  }
  int64_t total = 0;
  for (std::size_t i = 0; i < chosen.size(); ++i) {
    if (!chosen[i]) continue;
    entries_.push_back({i, total});
    total += slab_->entries[i].numel;
  }
  momentum_ = Tensor::zeros({std::max<int64_t>(total, 1)}, DType::f32, slab_->device());
}

std::vector<std::string> Muon::names() const {
  std::vector<std::string> out;
  for (const Entry& e : entries_) out.push_back(slab_->entries[e.slab_entry].name);
  return out;
}

void Muon::step(float grad_scale) {
  LMF_CHECK(!slab_->retired,
            "Muon: the model's parameters were moved (flatten_parameters/to) after the optimizer "
            "was built; build the optimizer again");
  NoGradGuard no_grad;
  ++step_;
  const float mu = config_.momentum;
  const Tensor& grads = slab_->grads();  // zeroes any entry no backward reached, once
  for (const Entry& entry : entries_) {
    const nn::SlabEntry& e = slab_->entries[entry.slab_entry];
    if (!e.param.requires_grad()) continue;
    const Shape& shape = e.param.shape();  // (rows, cols)
    Tensor grad = Tensor::view_of(grads.storage(), shape, DType::f32, grads.offset() + e.offset);
    if (grad_scale != 1.f) grad = scale(grad, grad_scale);  // the clip factor, as if applied in place
    Tensor buffer = Tensor::view_of(momentum_.storage(), shape, DType::f32, entry.offset);
    scale_(buffer, mu);
    add_(buffer, grad, 1.f - mu);
    Tensor update = buffer;
    if (config_.nesterov) {
      update = scale(grad, 1.f - mu);
      add_(update, buffer, mu);
    }
    const Tensor orthogonal = newton_schulz(update, config_.ns_steps);
    const double rows = static_cast<double>(shape[0]), cols = static_cast<double>(shape[1]);
    const float shape_scale = static_cast<float>(std::sqrt(std::max(1.0, rows / cols)));
    Tensor param = e.param;
    if (config_.weight_decay > 0.f) scale_(param, 1.f - config_.lr * config_.weight_decay);
    add_(param, orthogonal, -config_.lr * shape_scale);
  }
}

Muon::State Muon::state() const {
  State s;
  s.step = step_;
  for (const Entry& entry : entries_) {
    const nn::SlabEntry& e = slab_->entries[entry.slab_entry];
    s.momentum.emplace_back(e.name, Tensor::view_of(momentum_.storage(), e.param.shape(), DType::f32, entry.offset));
  }
  return s;
}

void Muon::load_state(const State& state) {
  LMF_CHECK(state.step >= 0, "Muon state: negative step ", state.step);
  LMF_CHECK(state.momentum.size() == entries_.size(), "Muon state: ", state.momentum.size(),
            " momentum buffers, the optimizer trains ", entries_.size(), " matrices");
  std::unordered_map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : state.momentum) by_name[name] = &t;
  for (const Entry& entry : entries_) {
    const nn::SlabEntry& e = slab_->entries[entry.slab_entry];
    const auto it = by_name.find(e.name);
    LMF_CHECK(it != by_name.end(), "Muon state: no momentum buffer for '", e.name, "'");
    LMF_CHECK(it->second->defined() && it->second->shape() == e.param.shape(), "Muon state: '", e.name,
              "' has shape ", it->second->defined() ? shape_str(it->second->shape()) : std::string("undefined"),
              ", the parameter has ", shape_str(e.param.shape()));
  }
  NoGradGuard no_grad;
  for (const Entry& entry : entries_) {
    const nn::SlabEntry& e = slab_->entries[entry.slab_entry];
    Tensor::view_of(momentum_.storage(), e.param.shape(), DType::f32, entry.offset).copy_(*by_name.at(e.name));
  }
  step_ = state.step;
}

}  // namespace lmf::optim
