// AdamW over the parameter slab. The slab is cut into runs of adjacent trainable parameters
// sharing a weight decay (recut only when freezing changes); a step walks those runs with one
// OpenMP loop each, so the update is a handful of long vectorisable loops and allocates nothing.
#include "lmforge/optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/adamw_device_scalars.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/autograd.h"
#include "lmforge/core/cuda_graph.h"
#include "lmforge/ops.h"
#include "lmforge/optim/device_step.h"

namespace lmf::optim {

void AdamWConfig::validate() const {
  LMF_CHECK(lr >= 0.f && std::isfinite(lr), "optimizer.lr must be finite and >= 0, got ", lr);
  LMF_CHECK(beta1 >= 0.f && beta1 < 1.f, "optimizer.beta1 must be in [0, 1), got ", beta1);
  LMF_CHECK(beta2 >= 0.f && beta2 < 1.f, "optimizer.beta2 must be in [0, 1), got ", beta2);
  LMF_CHECK(eps > 0.f, "optimizer.eps must be positive, got ", eps);
  LMF_CHECK(weight_decay >= 0.f, "optimizer.weight_decay must be >= 0, got ", weight_decay);
}

AdamW::AdamW(const nn::Module& model, AdamWConfig config, const std::vector<std::string>& exclude)
    : slab_(model.slab()), config_(config) {
  config_.validate();
  for (const nn::SlabEntry& e : slab_->entries) decay_.push_back(e.param.dim() >= 2);
  excluded_.assign(slab_->entries.size(), false);
  for (const auto& name : exclude) {
    const auto it = std::find_if(slab_->entries.begin(), slab_->entries.end(),
                                 [&](const nn::SlabEntry& e) { return e.name == name; });
    LMF_CHECK(it != slab_->entries.end(), "AdamW: cannot exclude '", name, "': the model has no such parameter");
    excluded_[static_cast<std::size_t>(it - slab_->entries.begin())] = true;
  }
  shard(0, slab_->numel());
  if (slab_->device().is_cuda()) scalars_ = Tensor::zeros({3}, DType::f32, slab_->device());
}

namespace {

struct BiasCorrections {
  float first, second_sqrt;
};

BiasCorrections bias_corrections(const AdamWConfig& config, int64_t step) {
  const double t = static_cast<double>(step);
  return {static_cast<float>(1.0 - std::pow(double(config.beta1), t)),
          static_cast<float>(std::sqrt(1.0 - std::pow(double(config.beta2), t)))};
}

}  // namespace

void AdamW::write_device_scalars() {
  const BiasCorrections bc = bias_corrections(config_, step_);
  const float values[3] = {config_.lr, config_.lr / bc.first, bc.second_sqrt};
  cuda::write_adamw_scalars(slab_->device(), scalars_.data<float>(), values);
}

void AdamW::shard(int64_t begin, int64_t end) {
  LMF_CHECK(0 <= begin && begin <= end && end <= slab_->numel(), "AdamW::shard: [", begin, ", ", end,
            ") is not inside the slab of ", slab_->numel(), " elements");
  shard_begin_ = begin;
  shard_end_ = end;
  m_ = Tensor::zeros({std::max<int64_t>(end - begin, 1)}, DType::f32, slab_->device());
  v_ = Tensor::zeros({std::max<int64_t>(end - begin, 1)}, DType::f32, slab_->device());
  runs_trainable_.clear();  // recut the runs to the shard on the next step
}

void AdamW::rebuild_runs() {
  runs_.clear();
  runs_trainable_.assign(slab_->entries.size(), false);
  for (std::size_t i = 0; i < slab_->entries.size(); ++i) {
    const nn::SlabEntry& e = slab_->entries[i];
    runs_trainable_[i] = e.param.requires_grad();
    if (!runs_trainable_[i] || excluded_[i]) continue;
    const float wd = decay_[i] ? config_.weight_decay : 0.f;
    // Merging with the previous entry also covers the zero padding between them, which the
    // update leaves at zero (zero gradient, zero moments, zero value).
    if (i > 0 && runs_trainable_[i - 1] && !excluded_[i - 1] && runs_.back().weight_decay == wd) {
      runs_.back().end = e.offset + e.numel;
    } else {
      runs_.push_back({e.offset, e.offset + e.numel, wd});
    }
  }
  // A shard (ZeRO-1) updates only its own elements: clip every run to it.
  std::vector<Run> clipped;
  for (Run r : runs_) {
    r.begin = std::max(r.begin, shard_begin_);
    r.end = std::min(r.end, shard_end_);
    if (r.begin < r.end) clipped.push_back(r);
  }
  runs_ = std::move(clipped);
}

void AdamW::prepare_step() {
  LMF_CHECK(!slab_->retired,
            "AdamW: the model's parameters were moved (flatten_parameters/to) after the optimizer "
            "was built; build the optimizer again");
#ifndef LMF_WITH_CUDA
  LMF_CHECK(slab_->device().is_cpu(), "AdamW: parameters on ", slab_->device().str(),
            " need the CUDA update, and this build has no CUDA");
#endif
  bool changed = runs_trainable_.size() != slab_->entries.size();
  for (std::size_t i = 0; i < slab_->entries.size() && !changed; ++i)
    changed = runs_trainable_[i] != slab_->entries[i].param.requires_grad();
  if (changed) rebuild_runs();
}

void AdamW::step(const DeviceStep& control) {
  prepare_step();
  const Device device = slab_->device();
  LMF_CHECK(device.is_cuda() && control.device() == device, "AdamW::step(DeviceStep): parameters on ",
            device.str(), " and the step's control on ", control.device().str(), "; both must be one GPU");
  const auto* state = static_cast<const kernels::StepControl*>(control.control());
  // lr comes from the device buffer, as in step(): inside a capture the graph rewrites it before
  // each replay, so a captured device step follows the schedule. The bias corrections are the
  // control's (it counts applied steps on the device).
  if (CudaGraph* graph = CudaGraph::capturing(device)) {
    graph->before_launch([this](bool) { write_device_scalars(); });
  } else {
    write_device_scalars();
  }
  float* p = slab_->params.data<float>();
  const float* g = slab_->grads().data<float>();
  for (const Run& r : runs_) {
    cuda::adamw_update_controlled(device, p + r.begin, g + r.begin, m_.data<float>() + (r.begin - shard_begin_),
                                  v_.data<float>() + (r.begin - shard_begin_), r.end - r.begin, r.weight_decay,
                                  config_.beta1, config_.beta2, config_.eps, state, scalars_.data<float>());
  }
}

void AdamW::step(float grad_scale) {
  prepare_step();
  ++step_;
  const BiasCorrections bc = bias_corrections(config_, step_);
  const float bias_correction1 = bc.first, bias_correction2_sqrt = bc.second_sqrt;
  float* p = slab_->params.data<float>();
  const float* g = slab_->grads().data<float>();
  float* m = m_.data<float>();
  float* v = v_.data<float>();
  const Device device = slab_->device();
  if (device.is_cuda() && grad_scale != 1.f) {
    NoGradGuard no_grad;
    Tensor grads = slab_->grads();
    scale_(grads, grad_scale);
  }
  if (device.is_cuda()) {
    // Inside a capture the host cannot write the buffer; the graph does it before each launch,
    // counting the step first on a replay (this call already counted the captured one).
    if (CudaGraph* graph = CudaGraph::capturing(device)) {
      graph->before_launch([this](bool replay) {
        if (replay) ++step_;
        write_device_scalars();
      });
    } else {
      write_device_scalars();
    }
  }
  for (const Run& r : runs_) {
    float* pr = p + r.begin;
    const float* gr = g + r.begin;
    float* mr = m + (r.begin - shard_begin_);
    float* vr = v + (r.begin - shard_begin_);
    const float decay = 1.f - config_.lr * r.weight_decay;
    switch (device.type) {
      case DeviceType::cpu:
        cpu::adamw_update(pr, gr, mr, vr, r.end - r.begin, decay, config_.lr, config_.beta1, config_.beta2,
                          config_.eps, bias_correction1, bias_correction2_sqrt, grad_scale);
        break;
      case DeviceType::cuda:  // the device's stream: ordered after the backward that made the gradients
        cuda::adamw_update_device_scalars(device, pr, gr, mr, vr, r.end - r.begin, r.weight_decay, config_.beta1,
                                          config_.beta2, config_.eps, scalars_.data<float>());
        break;
    }
  }
}

AdamW::State AdamW::state() const {
  LMF_CHECK(!sharded(), "AdamW::state: the moments are sharded (ZeRO-1); gather exp_avg_slab() and "
            "exp_avg_sq_slab() from every rank instead");
  State s;
  s.step = step_;
  for (const nn::SlabEntry& e : slab_->entries) {
    s.exp_avg.emplace_back(e.name, Tensor::view_of(m_.storage(), e.param.shape(), DType::f32, e.offset));
    s.exp_avg_sq.emplace_back(e.name,
                              Tensor::view_of(v_.storage(), e.param.shape(), DType::f32, e.offset));
  }
  return s;
}

void AdamW::load_state(const State& state) {
  LMF_CHECK(state.step >= 0, "optimizer state: negative step ", state.step);
  auto check = [&](const nn::StateDict& given, const char* what) {
    LMF_CHECK(given.size() == slab_->entries.size(), "optimizer state: ", what, " has ",
              given.size(), " tensors, the model has ", slab_->entries.size(), " parameters");
    std::unordered_map<std::string, const Tensor*> by_name;
    for (const auto& [name, t] : given) by_name[name] = &t;
    for (const nn::SlabEntry& e : slab_->entries) {
      auto it = by_name.find(e.name);
      LMF_CHECK(it != by_name.end(), "optimizer state: ", what, " has no entry for '", e.name, "'");
      LMF_CHECK(it->second->defined() && it->second->shape() == e.param.shape(),
                "optimizer state: ", what, " '", e.name, "' has shape ",
                it->second->defined() ? shape_str(it->second->shape()) : std::string("undefined"),
                ", the parameter has ", shape_str(e.param.shape()));
    }
    return by_name;
  };
  const auto m_by_name = check(state.exp_avg, "exp_avg");
  const auto v_by_name = check(state.exp_avg_sq, "exp_avg_sq");
  NoGradGuard no_grad;
  if (sharded()) {
    // Each rank keeps the part of every parameter's moments that falls inside its shard.
    for (const nn::SlabEntry& e : slab_->entries) {
      const int64_t begin = std::max(e.offset, shard_begin_), end = std::min(e.offset + e.numel, shard_end_);
      if (begin >= end) continue;
      const Tensor m = contiguous(*m_by_name.at(e.name)).to(Device::cpu());
      const Tensor v = contiguous(*v_by_name.at(e.name)).to(Device::cpu());
      LMF_CHECK(m.dtype() == DType::f32 && v.dtype() == DType::f32, "optimizer state: '", e.name,
                "' moments must be f32 to load into a sharded optimizer");
      const std::size_t bytes = static_cast<std::size_t>(end - begin) * sizeof(float);
      copy_bytes(m_.data<float>() + (begin - shard_begin_), m_.device(), m.data<float>() + (begin - e.offset),
                 Device::cpu(), bytes);
      copy_bytes(v_.data<float>() + (begin - shard_begin_), v_.device(), v.data<float>() + (begin - e.offset),
                 Device::cpu(), bytes);
    }
    step_ = state.step;
    return;
  }
  for (const nn::SlabEntry& e : slab_->entries) {
    Tensor::view_of(m_.storage(), e.param.shape(), DType::f32, e.offset).copy_(*m_by_name.at(e.name));
    Tensor::view_of(v_.storage(), e.param.shape(), DType::f32, e.offset)
        .copy_(*v_by_name.at(e.name));
  }
  step_ = state.step;
}

}  // namespace lmf::optim
