// Global-norm clipping against a hand computation: the returned norm is the pre-clip norm, grads
// are scaled by max_norm / (norm + 1e-6) only when that is below one, and the slab and list forms agree.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "lmforge/nn/linear.h"
#include "lmforge/optim/clip.h"

using lmf::Tensor;

namespace {
// Linear(2, 2) with bias: grads weight {3, 0, 0, 0}, bias {0, 4}: global norm 5.
struct Fixture {
  lmf::Generator gen{0};
  lmf::nn::Linear layer{2, 2, true, gen};
  Fixture() {
    layer.flatten_parameters();
    Tensor gw = layer.weight().grad(), gb = layer.bias().grad();
    gw.copy_(Tensor::from_vector(std::vector<float>{3, 0, 0, 0}, {2, 2}));
    gb.copy_(Tensor::from_vector(std::vector<float>{0, 4}, {2}));
  }
};
}  // namespace

TEST_CASE("clip_grad_norm scales by max_norm / (norm + 1e-6) and returns the pre-clip norm") {
  Fixture f;
  CHECK(lmf::optim::grad_norm(*f.layer.slab()) == Approx(5.0));
  const double norm = lmf::optim::clip_grad_norm(*f.layer.slab(), 1.0);
  CHECK(norm == Approx(5.0));
  const double coef = 1.0 / (5.0 + 1e-6);
  CHECK(f.layer.weight().grad().to_vector()[0] == Approx(3 * coef).epsilon(1e-6));
  CHECK(f.layer.bias().grad().to_vector()[1] == Approx(4 * coef).epsilon(1e-6));
  CHECK(lmf::optim::grad_norm(f.layer.parameters()) == Approx(5.0 * coef).epsilon(1e-6));
}

TEST_CASE("clip_grad_norm leaves gradients under the limit untouched") {
  Fixture f;
  CHECK(lmf::optim::clip_grad_norm(*f.layer.slab(), 10.0) == Approx(5.0));
  CHECK(f.layer.weight().grad().to_vector() == std::vector<float>{3, 0, 0, 0});
  CHECK(f.layer.bias().grad().to_vector() == std::vector<float>{0, 4});
}

TEST_CASE("the list form skips parameters without gradients and agrees with the slab form") {
  Fixture f;
  Tensor loose = Tensor::zeros({3}).set_requires_grad(true);  // no gradient yet
  std::vector<Tensor> params = f.layer.parameters();
  params.push_back(loose);
  CHECK(lmf::optim::clip_grad_norm(params, 2.5) == Approx(5.0));
  CHECK(f.layer.bias().grad().to_vector()[1] == Approx(4 * 2.5 / (5.0 + 1e-6)).epsilon(1e-6));
  CHECK_FALSE(loose.grad().defined());
}

TEST_CASE("a non-finite norm is returned without scaling") {
  Fixture f;
  Tensor gb = f.layer.bias().grad();
  gb.copy_(Tensor::from_vector(std::vector<float>{std::numeric_limits<float>::quiet_NaN(), 4}, {2}));
  CHECK(std::isnan(lmf::optim::clip_grad_norm(*f.layer.slab(), 1.0)));
  CHECK(f.layer.weight().grad().to_vector()[0] == 3.f);
  CHECK_THROWS(lmf::optim::clip_grad_norm(*f.layer.slab(), 0.0));
}
