// The autograd engine: gradients flow through views in reverse topological order, accumulate
// across backward calls, sum over shared inputs, are not recorded under NoGradGuard, and report
// each leaf once its gradient for a backward call is final.
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "lmforge/ops.h"

using lmf::Tensor;

TEST_CASE("gradient of a sum through views is one everywhere") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}).set_requires_grad(true);
  Tensor y = lmf::slice(lmf::transpose(x, 0, 1), 0, 1, 3);  // (2, 2): x[:, 1:3]^T
  lmf::sum(y).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{0, 1, 1, 0, 1, 1});
}

TEST_CASE("gradients accumulate across backward calls until zero_grad") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.f, 2.f}, {2}).set_requires_grad(true);
  lmf::sum(lmf::mul(x, x)).backward();
  lmf::sum(lmf::mul(x, x)).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{4, 8});
  x.zero_grad();
  CHECK(x.grad().to_vector() == std::vector<float>{0, 0});
}

TEST_CASE("a tensor used twice receives the sum of both gradients") {
  Tensor x = Tensor::from_vector(std::vector<float>{3.f}, {1}).set_requires_grad(true);
  Tensor y = lmf::add(lmf::scale(x, 2.f), lmf::mul(x, x));  // 2x + x^2
  lmf::sum(y).backward();
  CHECK(x.grad().item() == Approx(2.f + 2.f * 3.f));
}

TEST_CASE("NoGradGuard and detach stop recording") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.f, 2.f}, {2}).set_requires_grad(true);
  {
    lmf::NoGradGuard guard;
    Tensor y = lmf::mul(x, x);
    CHECK_FALSE(y.requires_grad());
  }
  CHECK(lmf::grad_enabled());
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.storage() == x.storage());
  CHECK_THROWS_AS(lmf::sum(d).backward(), lmf::Error);
}

TEST_CASE("a deep chain backpropagates without exhausting the stack") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.f}, {1}).set_requires_grad(true);
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = lmf::scale(y, 1.0f);
  lmf::sum(y).backward();
  CHECK(x.grad().item() == 1.f);
}

TEST_CASE("the leaf hook fires once per leaf, after its last contribution, later layers first") {
  const auto scalar = [](float v, bool grad) {
    return Tensor::from_vector(std::vector<float>{v}, {1}).set_requires_grad(grad);
  };
  std::vector<std::pair<std::string, float>> fired;  // leaf name and its gradient when it fired
  const auto hook_for = [&](const std::vector<std::pair<std::string, Tensor>>& leaves) {
    return [&fired, leaves](const Tensor& leaf) {
      for (const auto& [name, t] : leaves)
        if (t.impl() == leaf.impl()) fired.emplace_back(name, leaf.grad().item());
    };
  };

  SECTION("a leaf used twice fires once, after both") {
    Tensor x = scalar(3.f, true);
    Tensor y = lmf::add(lmf::scale(x, 2.f), lmf::mul(x, x));  // 2x + x^2
    lmf::backward(lmf::sum(y), Tensor(), hook_for({{"x", x}}));
    REQUIRE(fired.size() == 1);
    CHECK(fired[0].first == "x");
    CHECK(fired[0].second == Approx(2.f + 2.f * 3.f));
    CHECK(x.grad().item() == Approx(8.f));
  }

  SECTION("a chain fires later layers first; a tied leaf used at both ends fires last") {
    Tensor input = scalar(2.f, false), tied = scalar(3.f, true);
    Tensor w1 = scalar(5.f, true), w2 = scalar(7.f, true), frozen = scalar(11.f, false);
    Tensor h = lmf::mul(input, tied);  // "embedding"
    h = lmf::mul(h, w1);
    h = lmf::mul(h, frozen);
    h = lmf::mul(h, w2);
    h = lmf::mul(h, tied);  // "lm_head", tied to the embedding
    lmf::backward(lmf::sum(h), Tensor(),
                  hook_for({{"tied", tied}, {"w1", w1}, {"w2", w2}, {"frozen", frozen}}));
    REQUIRE(fired.size() == 3);
    CHECK(fired[0].first == "w2");
    CHECK(fired[1].first == "w1");
    CHECK(fired[2].first == "tied");
    // h = input·tied²·w1·frozen·w2: each leaf's full gradient is already in place when it fires.
    CHECK(fired[0].second == Approx(2.f * 9.f * 5.f * 11.f));
    CHECK(fired[1].second == Approx(2.f * 9.f * 11.f * 7.f));
    CHECK(fired[2].second == Approx(2.f * 2.f * 3.f * 5.f * 11.f * 7.f));
  }

  SECTION("a leaf root fires too, and the plain overload calls nothing") {
    Tensor x = scalar(4.f, true);
    lmf::backward(x, Tensor(), hook_for({{"x", x}}));
    REQUIRE(fired.size() == 1);
    CHECK(fired[0].second == 1.f);
    x.zero_grad();
    lmf::backward(lmf::mul(x, x));
    CHECK(fired.size() == 1);
  }
}
