// Tests of gelu (src/ops/gelu.cpp): GPT-2's tanh approximation against a double reference,
// and its gradient.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

TEST_CASE("gelu matches the tanh approximation in double", "[gelu]") {
  const Tensor x = random_tensor({1000, 33}, 1, false, 3.f);
  std::vector<double> expected;
  for (float v : x.to_vector()) {
    const double u = std::sqrt(2.0 / M_PI) * (v + 0.044715 * double(v) * v * v);
    expected.push_back(0.5 * v * (1.0 + std::tanh(u)));
  }
  CHECK(close_ratio(gelu(x).to_vector(), expected, 1e-5, 1e-6) <= 1);
}

TEST_CASE("gelu gradient matches finite differences", "[gelu][grad]") {
  const Tensor x = random_tensor({4, 7}, 2, true, 2.f);
  const auto r = gradcheck([](const std::vector<Tensor>& in) { return gelu(in[0]); }, {x});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("gelu rejects integer input and keeps bf16 input bf16 (mixed precision)", "[gelu][errors]") {
  CHECK_THROWS_AS(gelu(Tensor::zeros({3}, DType::i32)), Error);
  CHECK(gelu(Tensor::zeros({3}, DType::bf16)).dtype() == DType::bf16);
}
