// The autograd engine: gradients flow through views in reverse topological order, accumulate
// across backward calls, sum over shared inputs, and are not recorded under NoGradGuard.
#include <catch2/catch.hpp>

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
