// Tests of cross_entropy (src/ops/cross_entropy.cpp): the mean NLL against a double log-softmax,
// ignore_index (including every target ignored), (B, T, V) logits, the gradient, and bad targets.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

double reference_cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets, int32_t ignore) {
  const auto x = logits.to_vector();
  const std::size_t v = x.size() / targets.size();
  double total = 0;
  int count = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (targets[i] == ignore) continue;
    double m = -INFINITY, s = 0;
    for (std::size_t j = 0; j < v; ++j) m = std::max(m, double(x[i * v + j]));
    for (std::size_t j = 0; j < v; ++j) s += std::exp(x[i * v + j] - m);
    total += m + std::log(s) - x[i * v + targets[i]];
    ++count;
  }
  return count ? total / count : 0.0;
}

}  // namespace

TEST_CASE("cross_entropy matches a double log-softmax, skipping ignored targets", "[cross_entropy]") {
  const Tensor logits = random_tensor({6, 300}, 1, false, 4.f);
  const std::vector<int32_t> targets = {5, 299, -1, 0, 17, -1};
  const Tensor loss = cross_entropy(logits, Tensor::from_vector(targets, {6}));
  CHECK(loss.shape() == Shape{});
  CHECK(loss.item() == Approx(reference_cross_entropy(logits, targets, -1)).epsilon(1e-5));
  const std::vector<int32_t> custom = {5, 299, 7, 0, 17, 7};
  CHECK(cross_entropy(logits, Tensor::from_vector(custom, {6}), 7).item() ==
        Approx(reference_cross_entropy(logits, custom, 7)).epsilon(1e-5));
}

TEST_CASE("cross_entropy accepts (B, T, V) logits with (B, T) targets", "[cross_entropy]") {
  const Tensor logits = random_tensor({2, 3, 11}, 2, false);
  const std::vector<int32_t> targets = {1, 2, 3, 10, 0, 4};
  CHECK(cross_entropy(logits, Tensor::from_vector(targets, {2, 3})).item() ==
        Approx(reference_cross_entropy(logits, targets, -1)).epsilon(1e-5));
}

TEST_CASE("cross_entropy gradient matches finite differences and is zero on ignored rows", "[cross_entropy][grad]") {
  const Tensor logits = random_tensor({5, 7}, 3);
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>{1, -1, 6, 0, 3}, {5});
  const auto r = gradcheck([targets](const std::vector<Tensor>& in) { return cross_entropy(in[0], targets); }, {logits});
  INFO(r.report);
  CHECK(r.ok);
  const auto g = logits.grad().to_vector();
  for (int j = 0; j < 7; ++j) CHECK(g[7 + j] == 0.f);
}

TEST_CASE("cross_entropy with every target ignored is 0 with zero gradient", "[cross_entropy]") {
  Tensor logits = random_tensor({3, 4}, 4);
  const Tensor loss = cross_entropy(logits, Tensor::from_vector(std::vector<int32_t>{-1, -1, -1}, {3}));
  CHECK(loss.item() == 0.f);
  loss.backward();
  for (float g : logits.grad().to_vector()) CHECK(g == 0.f);
}

TEST_CASE("cross_entropy rejects out-of-range targets, wrong shapes and dtypes", "[cross_entropy][errors]") {
  const Tensor logits = Tensor::zeros({2, 5});
  CHECK_THROWS_WITH(cross_entropy(logits, Tensor::from_vector(std::vector<int32_t>{1, 5}, {2})),
                    Catch::Contains("target 5") && Catch::Contains("size 5"));
  CHECK_THROWS_AS(cross_entropy(logits, Tensor::from_vector(std::vector<int32_t>{-2, 0}, {2})), Error);
  CHECK_THROWS_AS(cross_entropy(logits, Tensor::from_vector(std::vector<int32_t>{1, 2, 3}, {3})), Error);
  CHECK_THROWS_AS(cross_entropy(logits, Tensor::zeros({2})), Error);
  CHECK_THROWS_AS(cross_entropy(Tensor::zeros({5}), Tensor::from_vector(std::vector<int32_t>{1}, {1})), Error);
}
