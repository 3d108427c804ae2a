// Tests of swiglu (src/ops/swiglu.cpp): values against a double reference, gradients by finite
// differences for gate and up, and shape errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

TEST_CASE("swiglu equals silu(gate) * up in double, across the tail of a SIMD block", "[swiglu]") {
  const Tensor gate = random_tensor({3, 37}, 1, false, 4.f), up = random_tensor({3, 37}, 2, false);
  const auto g = gate.to_vector(), u = up.to_vector();
  std::vector<double> expected(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) expected[i] = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
  CHECK(close_ratio(swiglu(gate, up).to_vector(), expected, 1e-5, 1e-6) <= 1);
}

TEST_CASE("swiglu gradients match finite differences", "[swiglu][grad]") {
  const Tensor gate = random_tensor({4, 9}, 3, true, 2.f), up = random_tensor({4, 9}, 4);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); }, {gate, up});
  INFO(r.report);
  CHECK(r.ok);
  const Tensor frozen_up = random_tensor({4, 9}, 5, false);  // only the gate needs a gradient
  r = gradcheck([&](const std::vector<Tensor>& in) { return swiglu(in[0], frozen_up); }, {gate});
  CHECK(r.ok);
}

TEST_CASE("swiglu rejects gate and up of different shapes", "[swiglu][errors]") {
  CHECK_THROWS_WITH(swiglu(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})), Catch::Contains("swiglu"));
}
