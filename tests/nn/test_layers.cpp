// Linear, Embedding and LayerNorm: parameter names, shapes and initial values, forward results
// against hand computation, and constructor errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/nn/embedding.h"
#include "lmforge/nn/layer_norm.h"
#include "lmforge/nn/linear.h"

using Catch::Matchers::Contains;
using lmf::Tensor;
using namespace lmf::nn;

TEST_CASE("Linear stores its weight (out, in) and computes x·Wᵀ + b") {
  lmf::Generator gen(1);
  Linear layer(3, 2, true, gen);
  CHECK(layer.weight().shape() == lmf::Shape{2, 3});
  CHECK(layer.bias().shape() == lmf::Shape{2});
  CHECK(layer.parameter("bias").to_vector() == std::vector<float>{0, 0});
  Tensor w = layer.weight(), b = layer.bias();
  w.copy_(Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3}));
  b.copy_(Tensor::from_vector(std::vector<float>{0.5f, -1}, {2}));
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 0, -1, 2, 1, 0}, {1, 2, 3});
  const Tensor y = layer.forward(x);  // (1, 2, 2)
  CHECK(y.shape() == lmf::Shape{1, 2, 2});
  CHECK(y.to_vector() == std::vector<float>{1 - 3 + 0.5f, 4 - 6 - 1, 2 + 2 + 0.5f, 8 + 5 - 1});
  Linear no_bias(3, 2, false, gen);
  CHECK_FALSE(no_bias.bias().defined());
  CHECK(no_bias.named_parameters().size() == 1);
  CHECK_THROWS_WITH(Linear(0, 2, true, gen), Contains("Linear(0, 2)"));
}

TEST_CASE("Embedding looks up rows and rejects ids outside the table") {
  lmf::Generator gen(1);
  Embedding table(5, 3, gen);
  CHECK(table.weight().shape() == lmf::Shape{5, 3});
  const std::vector<float> w = table.weight().to_vector();
  const Tensor rows = table.forward(Tensor::from_vector(std::vector<int32_t>{4, 0}, {2}));
  CHECK(rows.to_vector() == std::vector<float>{w[12], w[13], w[14], w[0], w[1], w[2]});
  CHECK_THROWS(table.forward(Tensor::from_vector(std::vector<int32_t>{5}, {1})));
}

TEST_CASE("LayerNorm starts as a plain normalisation with unit gain and zero bias") {
  LayerNorm norm(4);
  CHECK(norm.weight().to_vector() == std::vector<float>{1, 1, 1, 1});
  CHECK(norm.bias().to_vector() == std::vector<float>{0, 0, 0, 0});
  CHECK(norm.eps() == 1e-5f);
  const Tensor y = norm.forward(Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {1, 4}));
  const double inv = 1.0 / std::sqrt(1.25 + 1e-5);  // variance of 1..4 is 1.25
  const std::vector<float> out = y.to_vector();
  CHECK(out[0] == Approx(-1.5 * inv));
  CHECK(out[3] == Approx(1.5 * inv));
  LayerNorm no_bias(4, false);
  CHECK(no_bias.named_parameters().size() == 1);
}
