// zero_grad on a gradient slab writes nothing: it marks every gradient stale, the next backward
// writes (not adds) each parameter's first gradient, and reading a gradient zeroes one no backward
// reached. These tests compare a model that went through zero_grad with an identical fresh model
// (whose slab starts at zero), so the lazy path must give bit-identical gradients.
#include <catch2/catch.hpp>

#include <algorithm>

#include "lmforge/autograd.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/linear.h"
#include "lmforge/ops.h"
#include "nn/gpt_fixture.h"

using lmf::Tensor;
using lmf::nn::GPT;
using lmf::nn::GPTConfig;

namespace {

GPTConfig tiny_config() { return lmf_test::tiny_gpt_config(); }

Tensor ids(int64_t B, int64_t T, int32_t seed) {
  std::vector<int32_t> v(static_cast<std::size_t>(B * T));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = int32_t((i * 7 + seed * 13 + 3) % 31);
  return Tensor::from_vector(v, {B, T});
}

std::vector<float> raw_slab(const lmf::nn::Module& m) { return m.slab()->grads_as_is().to_vector(); }

bool all_zero(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return x == 0.f; });
}

// Two linear layers; `partial` uses only the first, so the second's parameters get no gradient.
class TwoLayers : public lmf::nn::Module {
 public:
  explicit TwoLayers(uint64_t seed) : gen(seed), a(3, 4, true, gen), b(4, 2, true, gen) {
    register_module("a", a);
    register_module("b", b);
  }
  Tensor full(const Tensor& x) const { return lmf::sum(lmf::tanh(b.forward(a.forward(x)))); }
  Tensor partial(const Tensor& x) const { return lmf::sum(lmf::tanh(a.forward(x))); }
  lmf::Generator gen;
  lmf::nn::Linear a, b;
};

}  // namespace

TEST_CASE("after zero_grad a GPT's next backward gives exactly a fresh model's gradients", "[nn][zero_grad]") {
  GPT used(tiny_config(), 5), fresh(tiny_config(), 5);
  used.flatten_parameters();  // as an optimizer does; without a slab zero_grad clears at once
  const Tensor x1 = ids(2, 8, 1), y1 = ids(2, 8, 2), x2 = ids(2, 8, 3), y2 = ids(2, 8, 4);
  used.forward(x1, y1).loss.backward();
  used.zero_grad();
  // Nothing was cleared: the old gradients are still in the slab, only marked stale.
  CHECK_FALSE(all_zero(raw_slab(used)));
  used.forward(x2, y2).loss.backward();
  fresh.forward(x2, y2).loss.backward();
  // Every matrix, the tied embedding (written by the head's product, then the scatter-add adds),
  // the layer norms and the biases.
  CHECK(used.grad_slab().to_vector() == fresh.grad_slab().to_vector());
  for (const auto& [name, p] : used.named_parameters())
    CHECK(p.grad().to_vector() == fresh.parameter(name).grad().to_vector());
}

TEST_CASE("gradients still accumulate over several backward passes after zero_grad", "[nn][zero_grad]") {
  GPT used(tiny_config(), 5), fresh(tiny_config(), 5);
  used.flatten_parameters();
  const Tensor x1 = ids(2, 8, 1), y1 = ids(2, 8, 2), x2 = ids(2, 8, 3), y2 = ids(2, 8, 4);
  used.forward(x2, y2).loss.backward();
  used.zero_grad();
  for (GPT* m : {&used, &fresh}) {
    m->forward(x1, y1).loss.backward();
    m->forward(x2, y2).loss.backward();
  }
  CHECK(used.grad_slab().to_vector() == fresh.grad_slab().to_vector());
}

TEST_CASE("a parameter no backward reached reads zero after zero_grad", "[nn][zero_grad]") {
  TwoLayers used(9), fresh(9);
  used.flatten_parameters();
  const Tensor x = Tensor::from_vector(std::vector<float>{0.1f, -0.2f, 0.3f, 0.4f, 0.5f, -0.6f}, {2, 3});
  used.full(x).backward();
  CHECK_FALSE(all_zero(used.b.weight().grad().to_vector()));
  used.zero_grad();
  used.partial(x).backward();
  fresh.partial(x).backward();
  SECTION("through Tensor::grad()") {
    CHECK(all_zero(used.b.weight().grad().to_vector()));
    CHECK(all_zero(used.b.bias().grad().to_vector()));
    CHECK(used.a.weight().grad().to_vector() == fresh.a.weight().grad().to_vector());
    CHECK(used.a.bias().grad().to_vector() == fresh.a.bias().grad().to_vector());
  }
  SECTION("through the slab") {
    CHECK(used.grad_slab().to_vector() == fresh.grad_slab().to_vector());
    CHECK(all_zero(used.b.weight().grad().to_vector()));
  }
}

TEST_CASE("without a slab zero_grad clears each gradient at once", "[nn][zero_grad]") {
  TwoLayers net(2);
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3}, {1, 3});
  net.full(x).backward();
  REQUIRE_FALSE(net.is_flattened());
  net.zero_grad();
  for (const auto& [name, p] : net.named_parameters()) {
    CHECK_FALSE(p.impl()->grad_stale);
    CHECK(all_zero(Tensor(p.impl()->grad).to_vector()));
  }
}

TEST_CASE("zero_grad twice without a backward, then reading, gives zeros", "[nn][zero_grad]") {
  TwoLayers net(3);
  net.flatten_parameters();
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3}, {1, 3});
  net.full(x).backward();
  net.zero_grad();
  net.zero_grad();
  CHECK(all_zero(net.grad_slab().to_vector()));
  // And a backward after the slab was read (settled) accumulates onto those zeros as usual.
  net.full(x).backward();
  TwoLayers fresh(3);
  fresh.full(x).backward();
  CHECK(net.grad_slab().to_vector() == fresh.grad_slab().to_vector());
}

TEST_CASE("the leaf hook sees each parameter's finished gradient after zero_grad", "[nn][zero_grad]") {
  TwoLayers used(4), fresh(4);
  used.flatten_parameters();
  const Tensor x = Tensor::from_vector(std::vector<float>{0.5f, -1.f, 2.f}, {1, 3});
  used.full(x).backward();
  used.zero_grad();
  fresh.full(x).backward();
  // The hook reads the gradient without settling it (as the data-parallel buckets read raw slab
  // memory): it must already be this backward's gradient, not the stale one.
  int seen = 0;
  lmf::backward(used.full(x), Tensor(), [&](const Tensor& leaf) {
    for (const auto& [name, p] : used.named_parameters()) {
      if (!p.is_same(leaf)) continue;
      ++seen;
      CHECK(Tensor(leaf.impl()->grad).to_vector() == fresh.parameter(name).grad().to_vector());
    }
  });
  CHECK(seen == 4);
}

TEST_CASE("the leaf hook sees zero for a parameter whose only edge brought no gradient", "[nn][zero_grad]") {
  TwoLayers net(6);
  net.flatten_parameters();
  const Tensor x = Tensor::from_vector(std::vector<float>{0.5f, -1.f, 2.f}, {1, 3});
  net.full(x).backward();
  REQUIRE_FALSE(all_zero(Tensor(net.b.weight().impl()->grad).to_vector()));
  net.zero_grad();
  // b.weight enters the graph only through a node whose backward gives it no gradient.
  const Tensor w = net.b.weight();
  const Tensor dead = lmf::record(lmf::sum(w).detach(), "no_gradient", {w},
                                  [](const Tensor&) { return std::vector<Tensor>{Tensor()}; });
  bool seen = false;
  lmf::backward(lmf::add(net.partial(x), dead), Tensor(), [&](const Tensor& leaf) {
    if (!leaf.is_same(w)) return;
    seen = true;
    CHECK(all_zero(Tensor(leaf.impl()->grad).to_vector()));  // raw memory, as the buckets read it
  });
  CHECK(seen);
}
