// Module bookkeeping: recursive parameter, buffer and submodule naming, state dicts, freezing and
// the slabs. Parameters and buffers are re-pointed in place (their TensorImpl gets the new storage
// and offset), so every handle anyone holds to one sees the move. A process-wide generation counter
// changes whenever any module's parameters or children change, so slab() notices a stale slab with
// one comparison and rebuilds it only then.
#include "lmforge/nn/module.h"

#include <atomic>
#include <utility>
#include <unordered_map>
#include <unordered_set>

#include "lmforge/autograd.h"

namespace lmf::nn {

namespace {

// Bumped by every change to any module's parameters or children, and by every flatten (which may
// move parameters out of a submodule's own slab). Starts at 1 so a fresh module's 0 is stale.
std::atomic<uint64_t> g_structure_generation{1};

void structure_changed() { g_structure_generation.fetch_add(1, std::memory_order_relaxed); }

// Re-points t's implementation at `moved` (same shape), so every handle to t follows.
void repoint(const Tensor& t, const Tensor& moved) {
  TensorImpl& impl = *t.impl();
  impl.storage = moved.impl()->storage;
  impl.strides = moved.impl()->strides;
  impl.offset = moved.impl()->offset;
}

}  // namespace

Tensor Module::register_parameter(std::string name, Tensor value) {
  LMF_CHECK(value.defined(), "register_parameter: '", name, "' is undefined");
  LMF_CHECK(name.find('.') == std::string::npos, "parameter name '", name, "' contains a dot");
  for (const auto& [existing, t] : params_)
    LMF_CHECK(existing != name, "parameter '", name, "' registered twice");
  for (const Buffer& b : buffers_)
    LMF_CHECK(b.name != name, "parameter '", name, "' has the name of a buffer");
  value.set_requires_grad(true);
  params_.emplace_back(std::move(name), value);
  structure_changed();
  return value;
}

Tensor Module::register_buffer(std::string name, Tensor value, bool persistent) {
  LMF_CHECK(value.defined(), "register_buffer: '", name, "' is undefined");
  LMF_CHECK(name.find('.') == std::string::npos, "buffer name '", name, "' contains a dot");
  for (const Buffer& b : buffers_) LMF_CHECK(b.name != name, "buffer '", name, "' registered twice");
  for (const auto& [existing, t] : params_)
    LMF_CHECK(existing != name, "buffer '", name, "' has the name of a parameter");
  value.set_requires_grad(false);
  buffers_.push_back(Buffer{std::move(name), value, persistent});
  return value;
}

void Module::remove_parameter(const std::string& name) {
  for (auto it = params_.begin(); it != params_.end(); ++it) {
    if (it->first != name) continue;
    params_.erase(it);
    structure_changed();
    return;
  }
  throw Error(str("remove_parameter: no parameter named '", name, "'"));
}

void Module::add_child(std::string name, Module* child) {
  // Dotted names are allowed here so a list of blocks registers as "h.0", "h.1", ...
  LMF_CHECK(child && child != this, "submodule '", name, "' is null or the module itself");
  for (const auto& [existing, m] : children_)
    LMF_CHECK(existing != name, "submodule '", name, "' registered twice");
  children_.emplace_back(std::move(name), child);
  structure_changed();
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

void Module::collect_buffers(const std::string& prefix, bool persistent_only, StateDict& out) const {
  for (const Buffer& b : buffers_)
    if (b.persistent || !persistent_only) out.emplace_back(prefix + b.name, b.value);
  for (const auto& [name, child] : children_) child->collect_buffers(prefix + name + ".", persistent_only, out);
}

void Module::collect_modules(const std::string& prefix,
                             std::vector<std::pair<std::string, const Module*>>& out) const {
  out.emplace_back(prefix, this);
  for (const auto& [name, child] : children_) child->collect_modules(prefix.empty() ? name : prefix + "." + name, out);
}

StateDict Module::named_buffers() const {
  StateDict out;
  collect_buffers("", false, out);
  return out;
}

Tensor Module::buffer(const std::string& name) const {
  for (auto& [n, t] : named_buffers())
    if (n == name) return t;
  throw Error(str("no buffer named '", name, "'"));
}

StateDict Module::state_dict() const {
  StateDict out = named_parameters();
  collect_buffers("", true, out);
  return out;
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, const Module*>> out;
  collect_modules("", out);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  // The tree is reachable from this non-const module, so its members are not const either.
  for (const auto& [name, m] : std::as_const(*this).named_modules()) out.emplace_back(name, const_cast<Module*>(m));
  return out;
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
  const StateDict own = state_dict();
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

const Tensor& ParameterSlab::grads() const {
  if (!maybe_stale_) return grads_;
  maybe_stale_ = false;
  // Runs of stale entries are zeroed together (all of them, when no backward ran).
  std::size_t i = 0;
  while (i < entries.size()) {
    if (!entries[i].param.impl()->grad_stale) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < entries.size() && entries[j].param.impl()->grad_stale) entries[j++].param.impl()->grad_stale = false;
    const int64_t begin = entries[i].offset;
    const int64_t end = j < entries.size() ? entries[j].offset : grads_.numel();
    Tensor::view_of(grads_.storage(), {end - begin}, DType::f32, grads_.offset() + begin).zero_();
    i = j;
  }
  return grads_;
}

void ParameterSlab::mark_grads_stale() {
  for (SlabEntry& e : entries) e.param.impl()->grad_stale = true;
  maybe_stale_ = true;
}

void Module::zero_grad() {
  if (slab_) {
    slab()->mark_grads_stale();
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
  for (const auto& [name, b] : named_buffers())
    if (b.device() != device) repoint(b, b.to(device));
  build_slab(device);
}

void Module::build_slab(Device device) const {
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
  slab->grads_ = Tensor::zeros({total}, DType::f32, device);
  NoGradGuard no_grad;
  for (SlabEntry& entry : slab->entries) {
    const Tensor& p = entry.param;
    Tensor dst = Tensor::view_of(slab->params.storage(), p.shape(), DType::f32, entry.offset);
    dst.copy_(p);
    Tensor grad = Tensor::view_of(slab->grads_.storage(), p.shape(), DType::f32, entry.offset);
    // A gradient accumulated before the slab existed (a backward before the first slab() call)
    // is carried over, so building the slab lazily never loses one.
    const Tensor old_grad = p.grad();
    if (old_grad.defined() && old_grad.shape() == p.shape()) grad.copy_(old_grad);
    // Re-point the shared implementation so that every existing handle follows the parameter.
    repoint(p, dst);
    p.impl()->grad = grad.impl();
    p.impl()->grad_stale = false;  // the carried-over gradient (or zero) is a real one
    p.impl()->bf16_copy.reset();  // a copy of the old storage would go stale
  }
  if (slab_) slab_->retired = true;
  slab_ = std::move(slab);
  structure_changed();  // a submodule's own slab, if it had one, no longer holds its parameters
  slab_generation_ = g_structure_generation.load(std::memory_order_relaxed);
}

// Whether the slab still holds exactly this module's parameters, in order.
bool Module::slab_matches() const {
  const StateDict named = named_parameters();
  if (named.size() != slab_->entries.size()) return false;
  for (std::size_t i = 0; i < named.size(); ++i) {
    const Tensor& p = named[i].second;
    const SlabEntry& e = slab_->entries[i];
    if (!p.is_same(e.param) || p.storage() != slab_->params.storage() || p.offset() != e.offset) return false;
  }
  return true;
}

const std::shared_ptr<ParameterSlab>& Module::slab() const {
  const uint64_t generation = g_structure_generation.load(std::memory_order_relaxed);
  if (slab_ && slab_generation_ == generation) return slab_;
  if (slab_ && slab_matches()) {
    slab_generation_ = generation;
    return slab_;
  }
  Device device = slab_ ? slab_->device() : Device::cpu();
  if (!slab_) {
    const StateDict named = named_parameters();
    if (!named.empty()) device = named.front().second.device();
    for (const auto& [name, t] : named)
      LMF_CHECK(t.device() == device, "the module's parameters are on different devices ('", named.front().first,
                "' on ", device.str(), ", '", name, "' on ", t.device().str(), "); call to(device) first");
  }
  build_slab(device);
  return slab_;
}

void Module::refresh_bf16_copies() {
  const std::shared_ptr<ParameterSlab>& s = slab();
  NoGradGuard no_grad;
  if (!s->params_bf16.defined()) s->params_bf16 = Tensor::empty({s->numel()}, DType::bf16, s->device());
  s->params_bf16.copy_(s->params);  // one pass over the whole slab
  for (const SlabEntry& entry : s->entries) {
    if (entry.param.dim() != 2) continue;  // vectors (biases, norm weights) are read in f32
    entry.param.impl()->bf16_copy =
        Tensor::view_of(s->params_bf16.storage(), entry.param.shape(), DType::bf16, entry.offset).impl();
  }
}

void Module::clear_bf16_copies() {
  if (!slab_) return;
  for (const SlabEntry& entry : slab_->entries) entry.param.impl()->bf16_copy.reset();
  slab_->params_bf16 = Tensor();
}

}  // namespace lmf::nn
