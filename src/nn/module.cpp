// Module bookkeeping: recursive parameter naming, state dicts, freezing and the slabs. Parameters
// are re-pointed in place (their TensorImpl gets the slab's storage and offset), so every handle
// anyone holds to a parameter sees the move.
#include "lmforge/nn/module.h"

#include <unordered_map>
#include <unordered_set>

#include "lmforge/autograd.h"

namespace lmf::nn {

Tensor Module::register_parameter(std::string name, Tensor value) {
  LMF_CHECK(value.defined(), "register_parameter: '", name, "' is undefined");
  LMF_CHECK(name.find('.') == std::string::npos, "parameter name '", name, "' contains a dot");
  for (const auto& [existing, t] : params_)
    LMF_CHECK(existing != name, "parameter '", name, "' registered twice");
  value.set_requires_grad(true);
  params_.emplace_back(std::move(name), value);
  return value;
}

void Module::remove_parameter(const std::string& name) {
  for (auto it = params_.begin(); it != params_.end(); ++it) {
    if (it->first != name) continue;
    params_.erase(it);
    return;
  }
  throw Error(str("remove_parameter: no parameter named '", name, "'"));
}

void Module::add_child(std::string name, Module* child) {
  // Dotted names are allowed here so a list of blocks registers as "h.0", "h.1", ...
  for (const auto& [existing, m] : children_)
    LMF_CHECK(existing != name, "submodule '", name, "' registered twice");
  children_.emplace_back(std::move(name), child);
}

Module* Module::submodule(const std::string& name) const {
  for (const auto& [child_name, child] : children_) {
    if (name == child_name) return child;
    if (name.size() > child_name.size() && name.compare(0, child_name.size(), child_name) == 0 &&
        name[child_name.size()] == '.')
      if (Module* found = child->submodule(name.substr(child_name.size() + 1))) return found;
  }
  return nullptr;
}

void Module::collect(const std::string& prefix, StateDict& out) const {
  for (const auto& [name, t] : params_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", out);
}

StateDict Module::named_parameters() const {
  StateDict out;
  collect("", out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

Tensor Module::parameter(const std::string& name) const {
  for (auto& [n, t] : named_parameters())
    if (n == name) return t;
  throw Error(str("no parameter named '", name, "'"));
}

bool Module::has_parameter(const std::string& name) const {
  for (auto& [n, t] : named_parameters())
    if (n == name) return true;
  return false;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

namespace {
std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  const std::size_t shown = std::min<std::size_t>(names.size(), 8);
  for (std::size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > shown) out += str(", ... (", names.size(), " in all)");
  return out;
}
}  // namespace

void Module::load_state_dict(const StateDict& state, bool strict) {
  const StateDict own = named_parameters();
  std::unordered_map<std::string, const Tensor*> given;
  for (const auto& [name, t] : state) {
    LMF_CHECK(given.emplace(name, &t).second, "load_state_dict: '", name, "' given twice");
  }
  std::vector<std::string> missing, unexpected;
  std::unordered_set<std::string> own_names;
  for (const auto& [name, t] : own) {
    own_names.insert(name);
    auto it = given.find(name);
    if (it == given.end()) {
      missing.push_back(name);
      continue;
    }
    const Tensor& src = *it->second;
    LMF_CHECK(src.defined(), "load_state_dict: '", name, "' is undefined");
    LMF_CHECK(src.shape() == t.shape(), "load_state_dict: '", name, "' has shape ",
              shape_str(src.shape()), ", the model expects ", shape_str(t.shape()));
  }
  for (const auto& [name, t] : state)
    if (!own_names.count(name)) unexpected.push_back(name);
  if (strict) {
    LMF_CHECK(missing.empty() && unexpected.empty(), "load_state_dict: ",
              missing.empty() ? "" : "missing " + join_names(missing),
              (!missing.empty() && !unexpected.empty()) ? "; " : "",
              unexpected.empty() ? "" : "unexpected " + join_names(unexpected));
  }
  NoGradGuard no_grad;
  for (const auto& [name, t] : own) {
    auto it = given.find(name);
    if (it == given.end()) continue;
    Tensor dst = t;
    dst.copy_(*it->second);
  }
}

void Module::train(bool training) {
  training_ = training;
  for (auto& [name, child] : children_) child->train(training);
}

void Module::zero_grad() {
  if (slab_) {
    slab_->grads.zero_();
    return;
  }
  for (auto& [name, t] : named_parameters()) t.zero_grad();
}

int64_t Module::set_requires_grad(const std::string& prefix, bool requires_grad) {
  int64_t matched = 0;
  for (auto& [name, t] : named_parameters()) {
    const bool match = prefix.empty() || name == prefix ||
                       (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
                        name[prefix.size()] == '.');
    if (!match) continue;
    Tensor p = t;
    p.set_requires_grad(requires_grad);
    ++matched;
  }
  LMF_CHECK(matched > 0, "no parameter matches '", prefix, "' (names look like 'h.0.attn')");
  return matched;
}

void Module::flatten_parameters(Device device) {
  const StateDict named = named_parameters();
  auto slab = std::make_shared<ParameterSlab>();
  int64_t total = 0;
  for (const auto& [name, t] : named) {
    LMF_CHECK(t.dtype() == DType::f32, "flatten_parameters: '", name, "' has dtype ",
              dtype_name(t.dtype()), "; slabs hold f32 parameters");
    SlabEntry entry{name, t, total, t.numel()};
    slab->entries.push_back(entry);
    total += (t.numel() + ParameterSlab::kSlabAlign - 1) / ParameterSlab::kSlabAlign *
             ParameterSlab::kSlabAlign;
  }
  slab->params = Tensor::zeros({total}, DType::f32, device);
  slab->grads = Tensor::zeros({total}, DType::f32, device);
  NoGradGuard no_grad;
  for (SlabEntry& entry : slab->entries) {
    const Tensor& p = entry.param;
    Tensor dst = Tensor::view_of(slab->params.storage(), p.shape(), DType::f32, entry.offset);
    dst.copy_(p);
    Tensor grad = Tensor::view_of(slab->grads.storage(), p.shape(), DType::f32, entry.offset);
    // Re-point the shared implementation so that every existing handle follows the parameter.
    TensorImpl& impl = *p.impl();
    impl.storage = dst.impl()->storage;
    impl.strides = dst.impl()->strides;
    impl.offset = entry.offset;
    impl.grad = grad.impl();
  }
  if (slab_) slab_->retired = true;
  slab_ = std::move(slab);
}

const std::shared_ptr<ParameterSlab>& Module::slab() const {
  LMF_CHECK(slab_, "the module's parameters are not flattened into slabs (call flatten_parameters)");
  return slab_;
}

}  // namespace lmf::nn
