// The engine owns gradient accumulation: destination-aware backwards (linear, matmul, embedding)
// write a leaf's first gradient, add into a leaf's existing one (a parameter's view into the
// gradient slab), or into a gradient the engine already holds for a non-leaf. Checked against the
// write-then-add path (fresh leaves, gradients summed afterwards) and against each other.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "lmforge/ops.h"

using lmf::Tensor;

namespace {

Tensor random(const lmf::Shape& shape, uint64_t seed, bool grad = true) {
  lmf::Generator gen(seed);
  return Tensor::randn(shape, gen).set_requires_grad(grad);
}

Tensor fresh_leaf(const Tensor& t) { return t.detach().clone().set_requires_grad(true); }

std::vector<float> plus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> out(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) out[i] = a[i] + b[i];
  return out;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, double(std::fabs(b[i])));
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// A (V, C) weight whose gradient is a view into a padded slab, as a model's parameters are.
struct SlabWeight {
  Tensor grads;  // (pad + V * C + pad)
  Tensor weight;
  int64_t pad = 16;
  SlabWeight(int64_t v, int64_t c, uint64_t seed) {
    grads = Tensor::zeros({pad + v * c + pad});
    weight = random({v, c}, seed);
    weight.set_grad(lmf::reshape(lmf::slice(grads, 0, pad, pad + v * c), {v, c}));
  }
  bool padding_untouched() const {
    const std::vector<float> all = grads.to_vector();
    return std::all_of(all.begin(), all.begin() + pad, [](float x) { return x == 0.f; }) &&
           std::all_of(all.end() - pad, all.end(), [](float x) { return x == 0.f; });
  }
};

// GPT's tied embedding: ids -> embedding(w) -> gelu -> linear(., w) -> cross-entropy.
Tensor tied_loss(const Tensor& w_embed, const Tensor& w_head, const Tensor& ids, const Tensor& targets) {
  return lmf::cross_entropy(lmf::linear(lmf::gelu(lmf::embedding(w_embed, ids)), w_head), targets);
}

Tensor ids_tensor(std::vector<int32_t> ids, int64_t b, int64_t t) { return Tensor::from_vector(ids, {b, t}); }

}  // namespace

TEST_CASE("a tied weight's two gradients accumulate into its slab view", "[autograd][destinations]") {
  const int64_t v = 40, c = 24, b = 2, t = 12;
  for (bool repeated : {false, true}) {
    INFO("repeated ids " << repeated);
    SlabWeight sw(v, c, 1);
    std::vector<int32_t> ids(b * t), targets(b * t);
    std::iota(ids.begin(), ids.end(), 0);  // distinct ids: each row of the scatter-add is one addition
    if (repeated)
      for (auto& id : ids) id %= 5;
    for (std::size_t i = 0; i < targets.size(); ++i) targets[i] = int32_t((i * 7) % v);
    const Tensor id_t = ids_tensor(ids, b, t), tg = ids_tensor(targets, b, t);
    const float* slab_row0 = sw.grads.data<float>() + sw.pad;

    tied_loss(sw.weight, sw.weight, id_t, tg).backward();
    CHECK(sw.weight.grad().data<float>() == slab_row0);  // still the slab view, filled in place
    CHECK(sw.padding_untouched());

    // Write-then-add: separate fresh leaves for the two uses, summed afterwards.
    const Tensor we = fresh_leaf(sw.weight), wh = fresh_leaf(sw.weight);
    tied_loss(we, wh, id_t, tg).backward();
    const std::vector<float> reference = plus(we.grad().to_vector(), wh.grad().to_vector());
    const std::vector<float> tied = sw.weight.grad().to_vector();
    if (!repeated) {
      CHECK(tied == reference);  // the head's product lands first, then one add per row
    } else {
      CHECK(max_rel_diff(tied, reference) < 1e-6);  // the order of the row additions differs
    }

    // A second backward accumulates on top, until zero_grad.
    tied_loss(sw.weight, sw.weight, id_t, tg).backward();
    CHECK(max_rel_diff(sw.weight.grad().to_vector(), plus(reference, reference)) < 1e-6);
    sw.weight.zero_grad();
    CHECK(sw.weight.grad().data<float>() == slab_row0);
    CHECK(sw.padding_untouched());
  }
}

TEST_CASE("the leaf hook sees a tied weight once, with both contributions in", "[autograd][destinations]") {
  SlabWeight sw(30, 16, 2);
  const Tensor ids = ids_tensor({1, 4, 4, 9, 0, 29}, 2, 3), targets = ids_tensor({2, 2, 5, 7, 1, 0}, 2, 3);
  int fired = 0;
  std::vector<float> at_hook;
  lmf::backward(tied_loss(sw.weight, sw.weight, ids, targets), Tensor(), [&](const Tensor& leaf) {
    if (leaf.impl() != sw.weight.impl()) return;
    ++fired;
    at_hook = leaf.grad().to_vector();
  });
  CHECK(fired == 1);
  CHECK(at_hook == sw.weight.grad().to_vector());
  const Tensor we = fresh_leaf(sw.weight), wh = fresh_leaf(sw.weight);
  tied_loss(we, wh, ids, targets).backward();
  CHECK(max_rel_diff(at_hook, plus(we.grad().to_vector(), wh.grad().to_vector())) < 1e-6);
}

TEST_CASE("the CPU accumulate path equals write-then-add", "[autograd][destinations]") {
  // linear's dw accumulates in its GEMM (beta = 1) and db in the column sums; embedding adds its
  // rows into the existing gradient. With one K slice of the GEMM (rows <= 256) and distinct ids,
  // each element gets exactly one addition either way, so the bits agree.
  const Tensor x = random({3, 20, 36}, 3, false);
  const Tensor weights = random({3, 20, 28}, 4, false);
  const auto loss = [&](const Tensor& w, const Tensor& b) { return lmf::sum(lmf::mul(lmf::linear(x, w, b), weights)); };
  Tensor w = random({28, 36}, 5), b = random({28}, 6);
  const Tensor g0_w = random({28, 36}, 7, false), g0_b = random({28}, 8, false);
  w.set_grad(g0_w.clone());
  b.set_grad(g0_b.clone());
  loss(w, b).backward();
  const Tensor wf = fresh_leaf(w), bf = fresh_leaf(b);
  loss(wf, bf).backward();
  CHECK(w.grad().to_vector() == plus(g0_w.to_vector(), wf.grad().to_vector()));
  CHECK(b.grad().to_vector() == plus(g0_b.to_vector(), bf.grad().to_vector()));

  Tensor table = random({50, 12}, 9);
  const Tensor g0_table = random({50, 12}, 10, false);
  const Tensor ids = ids_tensor({3, 17, 0, 49, 8, 22}, 2, 3);
  const Tensor scale = random({2, 3, 12}, 11, false);
  table.set_grad(g0_table.clone());
  lmf::sum(lmf::mul(lmf::embedding(table, ids), scale)).backward();
  const Tensor tf = fresh_leaf(table);
  lmf::sum(lmf::mul(lmf::embedding(tf, ids), scale)).backward();
  CHECK(table.grad().to_vector() == plus(g0_table.to_vector(), tf.grad().to_vector()));

  // More rows than one K slice: the GEMM adds each slice into the gradient in turn, so the
  // result is the same sum in another order.
  const Tensor x_long = random({700, 36}, 12, false), g0 = random({28, 36}, 14, false);
  Tensor w_long = random({28, 36}, 13);
  w_long.set_grad(g0.clone());
  lmf::sum(lmf::linear(x_long, w_long)).backward();
  const Tensor wl = fresh_leaf(w_long);
  lmf::sum(lmf::linear(x_long, wl)).backward();
  CHECK(max_rel_diff(w_long.grad().to_vector(), plus(g0.to_vector(), wl.grad().to_vector())) < 1e-6);
}

TEST_CASE("a leaf's first gradient is written into a buffer the engine hands out", "[autograd][destinations]") {
  // No gradient yet: linear writes straight into the new .grad, the same bits as a fresh tensor.
  const Tensor x = random({5, 7}, 15), w = random({4, 7}, 16), b = random({4}, 17);
  lmf::sum(lmf::linear(x, w, b)).backward();
  const Tensor g = Tensor::ones({5, 4});
  // d sum / dw = gᵀ x, d / db = column sums of g, d / dx = g w.
  CHECK(max_rel_diff(w.grad().to_vector(), lmf::matmul(g, x.detach(), true, false).to_vector()) < 1e-6);
  CHECK(b.grad().to_vector() == std::vector<float>(4, 5.f));
  CHECK(max_rel_diff(x.grad().to_vector(), lmf::matmul(g, w.detach()).to_vector()) < 1e-6);
}

TEST_CASE("a non-leaf feeding two products receives the sum of both gradients", "[autograd][destinations]") {
  // h feeds two linears (q and k projections): the second's dx is added into the gradient the
  // engine already holds for h.
  const Tensor x0 = random({6, 10}, 18), w1 = random({8, 10}, 19), w2 = random({5, 10}, 20);
  const Tensor h = lmf::scale(x0, 2.f);
  lmf::add(lmf::sum(lmf::linear(h, w1)), lmf::sum(lmf::matmul(h, w2, false, true))).backward();
  // Reference: dh = 1 (6, 8) · w1 + 1 (6, 5) · w2; dx0 = 2 dh.
  const std::vector<float> dh1 = lmf::matmul(Tensor::ones({6, 8}), w1.detach()).to_vector();
  const std::vector<float> dh2 = lmf::matmul(Tensor::ones({6, 5}), w2.detach()).to_vector();
  std::vector<float> expected = plus(dh1, dh2);
  for (float& e : expected) e *= 2.f;
  CHECK(max_rel_diff(x0.grad().to_vector(), expected) < 1e-6);
}

TEST_CASE("an input passed twice to one product gets both gradients", "[autograd][destinations]") {
  // matmul(a, a): the engine hands a destination once; the second gradient comes back new.
  const Tensor a = random({6, 6}, 21);
  lmf::sum(lmf::matmul(a, a)).backward();
  const Tensor ones = Tensor::ones({6, 6}), ad = a.detach();
  // d sum(a a) / da = 1 aᵀ + aᵀ 1
  const std::vector<float> expected =
      plus(lmf::matmul(ones, ad, false, true).to_vector(), lmf::matmul(ad, ones, true, false).to_vector());
  CHECK(max_rel_diff(a.grad().to_vector(), expected) < 1e-6);
}
