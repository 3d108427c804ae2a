// Tests of softmax (src/ops/softmax.cpp): rows against a double reference including large
// logits that would overflow without the max shift, and the gradient.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

TEST_CASE("softmax matches a double reference and is stable for large logits", "[softmax]") {
  for (float offset : {0.f, 1000.f}) {
    Tensor x = add(random_tensor({3, 4, 50}, 1, false, 3.f), Tensor::full({1}, offset));
    const auto xv = x.to_vector();
    std::vector<double> expected(xv.size());
    for (std::size_t r = 0; r < xv.size() / 50; ++r) {
      double m = -INFINITY, s = 0;
      for (int j = 0; j < 50; ++j) m = std::max(m, double(xv[r * 50 + j]));
      for (int j = 0; j < 50; ++j) s += std::exp(xv[r * 50 + j] - m);
      for (int j = 0; j < 50; ++j) expected[r * 50 + j] = std::exp(xv[r * 50 + j] - m) / s;
    }
    INFO("offset " << offset);
    CHECK(close_ratio(softmax(x).to_vector(), expected, 1e-5, 1e-7) <= 1);
  }
}

TEST_CASE("softmax gradient matches finite differences", "[softmax][grad]") {
  const Tensor x = random_tensor({3, 5}, 2);
  const auto r = gradcheck([](const std::vector<Tensor>& in) { return softmax(in[0]); }, {x});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("softmax rejects a scalar and non-f32 input", "[softmax][errors]") {
  CHECK_THROWS_AS(softmax(Tensor::zeros({})), Error);
  CHECK_THROWS_AS(softmax(Tensor::zeros({2, 3}, DType::i32)), Error);
}
