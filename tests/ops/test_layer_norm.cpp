// Tests of layer_norm (src/ops/layer_norm.cpp): values against a double reference (biased
// variance, eps inside the sqrt), gradients of x, weight and bias, and shape errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

std::vector<double> reference_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  const auto xv = x.to_vector(), wv = w.to_vector();
  const auto bv = b.defined() ? b.to_vector() : std::vector<float>(wv.size(), 0.f);
  const std::size_t c = wv.size(), n = xv.size() / c;
  std::vector<double> out(xv.size());
  for (std::size_t i = 0; i < n; ++i) {
    double mean = 0, var = 0;
    for (std::size_t j = 0; j < c; ++j) mean += xv[i * c + j];
    mean /= c;
    for (std::size_t j = 0; j < c; ++j) var += (xv[i * c + j] - mean) * (xv[i * c + j] - mean);
    var /= c;
    for (std::size_t j = 0; j < c; ++j)
      out[i * c + j] = (xv[i * c + j] - mean) / std::sqrt(var + eps) * wv[j] + bv[j];
  }
  return out;
}

}  // namespace

TEST_CASE("layer_norm matches a double reference, with and without bias", "[layer_norm]") {
  Tensor x = random_tensor({3, 5, 48}, 1, false, 2.f);
  x = add(x, Tensor::full({1}, 3.f));  // an offset the normalisation must remove
  const Tensor w = random_tensor({48}, 2, false);
  const Tensor b = random_tensor({48}, 3, false);
  CHECK(close_ratio(layer_norm(x, w, b).to_vector(), reference_layer_norm(x, w, b, 1e-5), 1e-4, 1e-5) <= 1);
  CHECK(close_ratio(layer_norm(x, w, Tensor(), 1e-3f).to_vector(), reference_layer_norm(x, w, Tensor(), 1e-3), 1e-4, 1e-5) <= 1);
}

TEST_CASE("layer_norm gradients match finite differences", "[layer_norm][grad]") {
  const Tensor x = random_tensor({2, 3, 6}, 4);
  const Tensor w = random_tensor({6}, 5);
  const Tensor b = random_tensor({6}, 6);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2]); }, {x, w, b});
  INFO(r.report);
  CHECK(r.ok);
  r = gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], Tensor()); }, {x, w});
  CHECK(r.ok);
}

TEST_CASE("layer_norm parameter gradients over many rows are deterministic", "[layer_norm]") {
  const Tensor x = random_tensor({700, 64}, 7, false);
  const Tensor g = random_tensor({700, 64}, 8, false);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    Tensor w = random_tensor({64}, 9);
    layer_norm(x, w, Tensor()).backward(g);
    if (run == 0) first = w.grad().to_vector();
    CHECK(w.grad().to_vector() == first);
  }
}

TEST_CASE("layer_norm rejects weight or bias of the wrong size", "[layer_norm][errors]") {
  const Tensor x = Tensor::zeros({2, 4});
  CHECK_THROWS_AS(layer_norm(x, Tensor::ones({3}), Tensor()), Error);
  CHECK_THROWS_AS(layer_norm(x, Tensor::ones({4}), Tensor::zeros({5})), Error);
  CHECK_THROWS_AS(layer_norm(Tensor::zeros({2, 4}, DType::i32), Tensor::ones({4}), Tensor()), Error);
  CHECK_THROWS_WITH(layer_norm(x, Tensor::ones({3}), Tensor()), Catch::Contains("layer_norm") && Catch::Contains("(3)"));
}

TEST_CASE("add_layer_norm gives the bits of add then layer_norm, forward and backward", "[layer_norm]") {
  for (bool bias : {true, false}) {
    INFO("bias " << bias);
    const Tensor x1 = random_tensor({2, 9, 37}, 31), x2 = random_tensor({2, 9, 37}, 31);
    const Tensor y1 = random_tensor({2, 9, 37}, 32), y2 = random_tensor({2, 9, 37}, 32);
    const Tensor w1 = random_tensor({37}, 33), w2 = random_tensor({37}, 33);
    const Tensor b1 = bias ? random_tensor({37}, 34) : Tensor(), b2 = bias ? random_tensor({37}, 34) : Tensor();
    const Tensor ws = random_tensor({2, 9, 37}, 35, false), wn = random_tensor({2, 9, 37}, 36, false);
    const auto [sum1, norm1] = add_layer_norm(x1, y1, w1, b1);
    const Tensor sum2 = add(x2, y2), norm2 = layer_norm(sum2, w2, b2);
    CHECK(sum1.to_vector() == sum2.to_vector());
    CHECK(norm1.to_vector() == norm2.to_vector());
    // Both outputs feed the loss, as in a GPT block (the sum is the next residual).
    backward(add(sum(mul(sum1, ws)), sum(mul(norm1, wn))));
    backward(add(sum(mul(sum2, ws)), sum(mul(norm2, wn))));
    CHECK(x1.grad().to_vector() == x2.grad().to_vector());
    CHECK(y1.grad().to_vector() == y2.grad().to_vector());
    CHECK(w1.grad().to_vector() == w2.grad().to_vector());
    if (bias) CHECK(b1.grad().to_vector() == b2.grad().to_vector());
  }
}

TEST_CASE("add_layer_norm gradients match finite differences; mismatched shapes are refused", "[layer_norm][grad]") {
  const Tensor x = random_tensor({3, 6}, 37), y = random_tensor({3, 6}, 38);
  const Tensor w = random_tensor({6}, 39), b = random_tensor({6}, 40);
  const auto r = gradcheck(
      [](const std::vector<Tensor>& in) {
        const auto [s, n] = add_layer_norm(in[0], in[1], in[2], in[3]);
        return add(mul(s, s), n);
      },
      {x, y, w, b});
  INFO(r.report);
  CHECK(r.ok);
  CHECK_THROWS_WITH(add_layer_norm(x, random_tensor({3, 5}, 41), w, b),
                    Catch::Contains("add_layer_norm") && Catch::Contains("(3, 5)"));
}
