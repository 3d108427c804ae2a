// Module bookkeeping: stable dotted names, state-dict round trips and load errors, the parameter and
// gradient slabs (parameters and grads alias them, handles follow a re-flatten, built lazily and
// rebuilt after the tree changes), buffers, named submodules, freezing, train/eval and zero_grad.
#include <catch2/catch.hpp>

#include "lmforge/nn/layer_norm.h"
#include "lmforge/nn/linear.h"
#include "lmforge/ops.h"

using Catch::Matchers::Contains;
using lmf::Tensor;
using namespace lmf::nn;

namespace {

// Two levels of nesting: Net { fc1, inner { norm, fc2 } }.
class Inner : public Module {
 public:
  explicit Inner(lmf::Generator& gen) : norm(4), fc2(4, 2, true, gen) {
    register_module("norm", norm);
    register_module("fc2", fc2);
  }
  Tensor forward(const Tensor& x) const { return fc2.forward(norm.forward(x)); }
  LayerNorm norm;
  Linear fc2;
};

class Net : public Module {
 public:
  explicit Net(uint64_t seed = 0) : gen(seed), fc1(3, 4, false, gen), inner(gen) {
    scale = register_parameter("scale", Tensor::ones({2}));
    register_module("fc1", fc1);
    register_module("inner", inner);
  }
  Tensor forward(const Tensor& x) const { return lmf::mul(inner.forward(fc1.forward(x)), scale); }
  lmf::Generator gen;
  Tensor scale;
  Linear fc1;
  Inner inner;
};

std::vector<std::string> names_of(const Module& m) {
  std::vector<std::string> names;
  for (const auto& [name, t] : m.named_parameters()) names.push_back(name);
  return names;
}

}  // namespace

TEST_CASE("parameters are named by path in registration order") {
  Net net;
  CHECK(names_of(net) == std::vector<std::string>{"scale", "fc1.weight", "inner.norm.weight",
                                                  "inner.norm.bias", "inner.fc2.weight",
                                                  "inner.fc2.bias"});
  CHECK(net.parameters().size() == 6);
  CHECK(net.num_parameters() == 2 + 12 + 4 + 4 + 8 + 2);
  CHECK(net.parameter("inner.fc2.weight").shape() == lmf::Shape{2, 4});
  CHECK(net.parameter("inner.fc2.weight").is_same(net.inner.fc2.weight()));
  CHECK_THROWS_WITH(net.parameter("inner.fc3.weight"), Contains("'inner.fc3.weight'"));
  for (const Tensor& p : net.parameters()) CHECK(p.requires_grad());
}

TEST_CASE("state dict round trip restores every value") {
  Net a(1), b(2);
  a.flatten_parameters();
  const StateDict saved = a.state_dict();
  CHECK(saved[1].second.is_same(a.fc1.weight()));  // the tensors themselves, not copies
  StateDict snapshot;
  for (const auto& [name, t] : saved) snapshot.emplace_back(name, t.clone());
  b.load_state_dict(snapshot);
  for (const auto& [name, t] : b.named_parameters())
    CHECK(t.to_vector() == a.parameter(name).to_vector());
  // Loading into a flattened module writes through the slab views.
  Net c(3);
  c.flatten_parameters();
  const Tensor slab_before = c.param_slab();
  c.load_state_dict(snapshot);
  CHECK(c.param_slab().is_same(slab_before));
  CHECK(c.param_slab().to_vector() == a.param_slab().to_vector());
}

TEST_CASE("load_state_dict names missing and unexpected entries and shape mismatches") {
  Net net;
  StateDict state;
  for (const auto& [name, t] : net.named_parameters()) state.emplace_back(name, t.clone());

  StateDict missing(state.begin() + 1, state.end());
  CHECK_THROWS_WITH(net.load_state_dict(missing), Contains("missing scale"));

  StateDict extra = state;
  extra.emplace_back("inner.fc3.weight", Tensor::zeros({1}));
  CHECK_THROWS_WITH(net.load_state_dict(extra), Contains("unexpected inner.fc3.weight"));
  CHECK_NOTHROW(net.load_state_dict(extra, /*strict=*/false));
  CHECK_NOTHROW(net.load_state_dict(missing, /*strict=*/false));

  StateDict wrong = state;
  wrong[1].second = Tensor::zeros({3, 4});
  CHECK_THROWS_WITH(net.load_state_dict(wrong),
                    Contains("'fc1.weight' has shape (3, 4), the model expects (4, 3)"));
  CHECK_THROWS_WITH(net.load_state_dict(wrong, false), Contains("'fc1.weight'"));

  StateDict twice = state;
  twice.push_back(state[0]);
  CHECK_THROWS_WITH(net.load_state_dict(twice), Contains("'scale' given twice"));
}

TEST_CASE("a failed load leaves the parameters untouched") {
  Net net;
  const std::vector<float> before = net.fc1.weight().to_vector();
  StateDict state;
  for (const auto& [name, t] : net.named_parameters()) state.emplace_back(name, Tensor::zeros(t.shape()));
  state.back().second = Tensor::zeros({7});
  CHECK_THROWS(net.load_state_dict(state));
  CHECK(net.fc1.weight().to_vector() == before);
}

TEST_CASE("flattened parameters and gradients are aligned views of the slabs") {
  Net net;
  const Tensor held = net.fc1.weight();  // a handle taken before flattening follows the move
  const std::vector<float> values = held.to_vector();
  net.flatten_parameters();
  const auto& slab = *net.slab();
  REQUIRE(slab.entries.size() == 6);
  CHECK(slab.params.numel() == slab.grads().numel());
  CHECK(held.to_vector() == values);
  CHECK(held.storage() == slab.params.storage());
  int64_t expected_offset = 0;
  for (const SlabEntry& e : slab.entries) {
    CHECK(e.offset == expected_offset);
    CHECK(e.offset % ParameterSlab::kSlabAlign == 0);
    CHECK(e.param.storage() == slab.params.storage());
    CHECK(e.param.offset() == e.offset);
    CHECK(e.param.is_contiguous());
    CHECK(e.param.grad().storage() == slab.grads().storage());
    CHECK(e.param.grad().offset() == e.offset);
    expected_offset += (e.numel + 15) / 16 * 16;
  }
  CHECK(slab.params.numel() == expected_offset);
  // Writes through the slab are seen by the parameter, and the other way round.
  Tensor params = slab.params;
  params.fill_(0.5f);
  for (float v : net.inner.fc2.bias().to_vector()) CHECK(v == 0.5f);
  Tensor bias = net.inner.norm.bias();
  bias.fill_(2.f);
  const std::vector<float> flat = slab.params.to_vector();
  const SlabEntry& e = slab.entries[3];
  REQUIRE(e.name == "inner.norm.bias");
  for (int64_t i = 0; i < e.numel; ++i) CHECK(flat[e.offset + i] == 2.f);
}

TEST_CASE("backward accumulates into the gradient slab; zero_grad clears it") {
  Net net;
  net.flatten_parameters();
  const Tensor x = Tensor::from_vector(std::vector<float>{0.1f, -0.2f, 0.3f, 0.4f, 0.5f, -0.6f}, {2, 3});
  lmf::sum(net.forward(x)).backward();
  const Tensor g = net.scale.grad();
  CHECK(g.storage() == net.grad_slab().storage());
  double total = 0;
  for (float v : net.grad_slab().to_vector()) total += std::abs(v);
  CHECK(total > 0);
  net.zero_grad();
  for (float v : net.grad_slab().to_vector()) CHECK(v == 0.f);
  CHECK(net.scale.grad().storage() == net.grad_slab().storage());
}

TEST_CASE("re-flattening moves parameters to fresh slabs and retires the old one") {
  Net net;
  net.flatten_parameters();
  const auto old_slab = net.slab();
  const std::vector<float> values = old_slab->params.to_vector();
  net.to(lmf::Device::cpu());
  CHECK(old_slab->retired);
  CHECK_FALSE(net.slab()->retired);
  CHECK(net.slab() != old_slab);
  CHECK(net.param_slab().to_vector() == values);
  CHECK(net.fc1.weight().storage() == net.param_slab().storage());
}

TEST_CASE("slabs are built on first use, carrying gradients accumulated before") {
  Net net;
  CHECK_FALSE(net.is_flattened());
  const Tensor x = Tensor::from_vector(std::vector<float>{0.1f, -0.2f, 0.3f}, {1, 3});
  lmf::sum(net.forward(x)).backward();
  const std::vector<float> grad = net.fc1.weight().grad().to_vector();
  const std::vector<float> values = net.fc1.weight().to_vector();
  const auto& slab = net.slab();  // no flatten_parameters call
  CHECK(net.is_flattened());
  CHECK(net.fc1.weight().storage() == slab->params.storage());
  CHECK(net.fc1.weight().to_vector() == values);
  CHECK(net.fc1.weight().grad().storage() == slab->grads().storage());
  CHECK(net.fc1.weight().grad().to_vector() == grad);
  CHECK(net.slab() == slab);  // nothing changed: the same slab
}

TEST_CASE("registering a parameter or submodule after flattening rebuilds the slab on next use") {
  class Growing : public Module {
   public:
    Growing() : gen(1), first(2, 2, false, gen), second(2, 3, false, gen) { register_module("first", first); }
    void grow() { register_module("second", second); }
    void add_gain() { gain = register_parameter("gain", Tensor::ones({3})); }
    lmf::Generator gen;
    Linear first, second;
    Tensor gain;
  } model;
  const auto old_slab = model.slab();
  const std::vector<float> w = model.first.weight().to_vector();
  model.grow();
  const auto grown = model.slab();
  CHECK(old_slab->retired);
  CHECK(grown != old_slab);
  REQUIRE(grown->entries.size() == 2);
  CHECK(grown->entries[1].name == "second.weight");
  CHECK(model.second.weight().storage() == grown->params.storage());
  CHECK(model.first.weight().to_vector() == w);
  model.add_gain();
  CHECK(model.slab()->entries.size() == 3);
  CHECK(grown->retired);
  // Another module's changes leave this slab alone.
  const auto current = model.slab();
  Linear unrelated(2, 2, false, model.gen);
  CHECK(model.slab() == current);
}

TEST_CASE("buffers: registered, named by path, moved in place, persistent ones in the state dict") {
  class WithBuffers : public Module {
   public:
    WithBuffers() : gen(2), fc(2, 2, false, gen) {
      table = register_buffer("table", Tensor::full({3}, 2.f));
      counts = register_buffer("counts", Tensor::zeros({2}), /*persistent=*/true);
      register_module("fc", fc);
    }
    lmf::Generator gen;
    Linear fc;
    Tensor table, counts;
  };
  class Outer : public Module {
   public:
    Outer() { register_module("inner", inner); }
    WithBuffers inner;
  } outer;
  const auto buffers = outer.named_buffers();
  REQUIRE(buffers.size() == 2);
  CHECK(buffers[0].first == "inner.table");
  CHECK(buffers[1].first == "inner.counts");
  CHECK_FALSE(buffers[0].second.requires_grad());
  CHECK(outer.buffer("inner.table").is_same(outer.inner.table));
  CHECK_THROWS_WITH(outer.buffer("inner.nothing"), Contains("'inner.nothing'"));
  // Parameters first, then persistent buffers; the non-persistent table never appears.
  std::vector<std::string> names;
  for (const auto& [name, t] : outer.state_dict()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"inner.fc.weight", "inner.counts"});
  CHECK(outer.slab()->entries.size() == 1);  // buffers are not in the slabs
  StateDict state;
  state.emplace_back("inner.fc.weight", Tensor::zeros({2, 2}));
  state.emplace_back("inner.counts", Tensor::full({2}, 5.f));
  outer.load_state_dict(state);
  CHECK(outer.inner.counts.to_vector() == std::vector<float>{5.f, 5.f});
  CHECK_THROWS_WITH(outer.load_state_dict({state[0]}), Contains("missing inner.counts"));
  outer.to(lmf::Device::cpu());
  CHECK(outer.inner.table.to_vector() == std::vector<float>{2.f, 2.f, 2.f});
}

TEST_CASE("named_modules lists the tree depth first and has_submodule finds a dotted path") {
  Net net;
  std::vector<std::string> names;
  for (const auto& [name, m] : net.named_modules()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"", "fc1", "inner", "inner.norm", "inner.fc2"});
  CHECK(net.submodule("inner.fc2") == &net.inner.fc2);
  CHECK(net.has_submodule("inner.norm"));
  CHECK_FALSE(net.has_submodule("inner.fc3"));
  CHECK(net.submodule("inner.fc3") == nullptr);
}

TEST_CASE("freezing by name prefix matches whole path components") {
  Net net;
  CHECK(net.freeze("inner") == 4);
  CHECK_FALSE(net.inner.fc2.weight().requires_grad());
  CHECK(net.fc1.weight().requires_grad());
  CHECK(net.unfreeze("inner.fc2") == 2);
  CHECK(net.inner.fc2.weight().requires_grad());
  CHECK(net.freeze("inner.fc2.bias") == 1);
  CHECK_THROWS_WITH(net.freeze("inn"), Contains("no parameter matches 'inn'"));
  CHECK(net.freeze() == 6);
}

TEST_CASE("train and eval propagate to every submodule") {
  Net net;
  CHECK(net.is_training());
  net.eval();
  CHECK_FALSE(net.is_training());
  CHECK_FALSE(net.inner.is_training());
  CHECK_FALSE(net.inner.fc2.is_training());
  net.train();
  CHECK(net.inner.norm.is_training());
}
