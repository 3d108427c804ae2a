// Tests of sum and mean (src/ops/reduce.cpp): full and per-dim reductions against double sums,
// keepdim and negative dims, gradients, and errors for bad dims.
#include <catch2/catch.hpp>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

// Sum over `dim` of x (2, 3, 4) in double, as (OUTER, INNER) in row-major order.
std::vector<double> reference_sum_dim(const Tensor& x, int dim, double factor) {
  const auto v = x.to_vector();
  const Shape& s = x.shape();
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; ++i) outer *= s[i];
  for (int i = dim + 1; i < x.dim(); ++i) inner *= s[i];
  std::vector<double> out(outer * inner, 0.0);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t d = 0; d < s[dim]; ++d)
      for (int64_t i = 0; i < inner; ++i) out[o * inner + i] += v[(o * s[dim] + d) * inner + i] * factor;
  return out;
}

}  // namespace

TEST_CASE("sum and mean of every element match a double sum", "[reduce]") {
  const Tensor x = random_tensor({37, 1000}, 1, false);  // several parallel chunks
  double s = 0.0;
  for (float v : x.to_vector()) s += v;
  const Tensor total = sum(x);
  CHECK(total.shape() == Shape{});
  CHECK(total.item() == Approx(s).epsilon(1e-6).margin(1e-4));
  CHECK(mean(x).item() == Approx(s / x.numel()).epsilon(1e-6).margin(1e-7));
}

TEST_CASE("sum and mean over a dim match a double reference, with keepdim and negative dims", "[reduce]") {
  const Tensor x = random_tensor({2, 3, 4}, 2, false);
  for (int dim = 0; dim < 3; ++dim) {
    INFO("dim " << dim);
    CHECK(close_ratio(sum(x, dim).to_vector(), reference_sum_dim(x, dim, 1.0), 1e-6, 1e-6) <= 1);
    CHECK(close_ratio(mean(x, dim - 3).to_vector(), reference_sum_dim(x, dim, 1.0 / x.size(dim)), 1e-6, 1e-6) <= 1);
  }
  CHECK(sum(x, 1).shape() == Shape{2, 4});
  CHECK(sum(x, 1, true).shape() == Shape{2, 1, 4});
  CHECK(mean(x, -1, true).shape() == Shape{2, 3, 1});
}

TEST_CASE("reduction gradients match finite differences", "[reduce][grad]") {
  const Tensor x = random_tensor({2, 3, 4}, 3);
  CHECK(gradcheck([](const std::vector<Tensor>& in) { return sum(in[0]); }, {x}).ok);
  CHECK(gradcheck([](const std::vector<Tensor>& in) { return mean(in[0]); }, {x}).ok);
  for (int dim = -3; dim < 3; ++dim) {
    INFO("dim " << dim);
    CHECK(gradcheck([dim](const std::vector<Tensor>& in) { return sum(in[0], dim); }, {x}).ok);
    CHECK(gradcheck([dim](const std::vector<Tensor>& in) { return mean(in[0], dim, true); }, {x}).ok);
  }
}

TEST_CASE("reductions reject bad dims, empty means and non-f32 input", "[reduce][errors]") {
  const Tensor x = Tensor::zeros({2, 3});
  CHECK_THROWS_AS(sum(x, 2), Error);
  CHECK_THROWS_AS(mean(x, -3), Error);
  CHECK_THROWS_AS(mean(Tensor::zeros({0})), Error);
  CHECK_THROWS_AS(sum(Tensor::zeros({3}, DType::i32)), Error);
  CHECK(sum(Tensor::zeros({0})).item() == 0.f);
}
