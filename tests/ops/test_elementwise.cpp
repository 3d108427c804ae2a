// Tests of add, sub, mul and scale (src/ops/elementwise.cpp): values against a double reference,
// every broadcast form, gradients by finite differences, and the errors for bad shapes and dtypes.
#include <catch2/catch.hpp>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

// out[i] = op(a[i], b[i % nb]) in double.
template <class Op>
std::vector<double> reference(const Tensor& a, const Tensor& b, Op op) {
  const auto av = a.to_vector(), bv = b.to_vector();
  std::vector<double> out(av.size());
  for (std::size_t i = 0; i < av.size(); ++i) out[i] = op(double(av[i]), double(bv[i % bv.size()]));
  return out;
}

}  // namespace

TEST_CASE("add, sub and mul match a double reference for every broadcast form", "[elementwise]") {
  const Tensor a = random_tensor({2, 3, 4}, 1, false);
  const std::vector<Shape> b_shapes = {{2, 3, 4}, {3, 4}, {4}, {1}, {}};
  for (const Shape& bs : b_shapes) {
    INFO("b shape " << shape_str(bs));
    const Tensor b = random_tensor(bs, 2, false);
    CHECK(close_ratio(add(a, b).to_vector(), reference(a, b, [](double x, double y) { return x + y; }), 1e-6, 1e-6) <= 1);
    CHECK(close_ratio(sub(a, b).to_vector(), reference(a, b, [](double x, double y) { return x - y; }), 1e-6, 1e-6) <= 1);
    CHECK(close_ratio(mul(a, b).to_vector(), reference(a, b, [](double x, double y) { return x * y; }), 1e-6, 1e-6) <= 1);
    CHECK(add(a, b).shape() == a.shape());
  }
}

TEST_CASE("scale multiplies every element", "[elementwise]") {
  const Tensor a = random_tensor({5, 7}, 3, false);
  std::vector<double> expected = to_double(a);
  for (double& v : expected) v *= -1.5;
  CHECK(close_ratio(scale(a, -1.5f).to_vector(), expected, 1e-6, 1e-7) <= 1);
}

TEST_CASE("elementwise gradients match finite differences, reduced over broadcast dims", "[elementwise][grad]") {
  const std::vector<Shape> b_shapes = {{2, 3, 4}, {3, 4}, {4}, {1}};
  for (const Shape& bs : b_shapes) {
    INFO("b shape " << shape_str(bs));
    const Tensor a = random_tensor({2, 3, 4}, 10);
    const Tensor b = random_tensor(bs, 11);
    for (auto op : {&add, &sub, &mul}) {
      const auto r = gradcheck([op](const std::vector<Tensor>& in) { return op(in[0], in[1]); }, {a, b});
      INFO(r.report);
      CHECK(r.ok);
    }
  }
  const Tensor x = random_tensor({3, 5}, 12);
  const auto r = gradcheck([](const std::vector<Tensor>& in) { return scale(in[0], 0.7f); }, {x});
  CHECK(r.ok);
}

TEST_CASE("a residual add used twice accumulates both gradients", "[elementwise][grad]") {
  const Tensor x = random_tensor({4, 3}, 13);
  const auto r = gradcheck([](const std::vector<Tensor>& in) { return mul(add(in[0], in[0]), in[0]); }, {x});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("elementwise ops read strided (transposed) inputs correctly", "[elementwise]") {
  const Tensor base = random_tensor({4, 3}, 14, false);
  const Tensor a = transpose(base, 0, 1);  // (3, 4), not contiguous
  const Tensor b = random_tensor({3, 4}, 15, false);
  const auto av = a.to_vector(), bv = b.to_vector();
  std::vector<double> expected(av.size());
  for (std::size_t i = 0; i < av.size(); ++i) expected[i] = double(av[i]) + bv[i];
  CHECK(close_ratio(add(a, b).to_vector(), expected, 1e-6, 1e-6) <= 1);
}

TEST_CASE("elementwise ops reject shapes that do not broadcast and non-f32 dtypes", "[elementwise][errors]") {
  const Tensor a = Tensor::zeros({2, 3});
  CHECK_THROWS_AS(add(a, Tensor::zeros({2})), Error);
  CHECK_THROWS_AS(sub(a, Tensor::zeros({2, 3, 1})), Error);
  CHECK_THROWS_AS(mul(a, Tensor::zeros({4, 3, 2})), Error);
  CHECK_THROWS_AS(add(a, Tensor::zeros({3}, DType::i32)), Error);
  CHECK_THROWS_AS(scale(Tensor::zeros({3}, DType::bf16), 2.f), Error);
  CHECK_THROWS_WITH(add(a, Tensor::zeros({2})), Catch::Contains("add") && Catch::Contains("(2, 3)"));
}

TEST_CASE("elementwise ops record nothing without grad or under NoGradGuard", "[elementwise]") {
  const Tensor a = random_tensor({2, 2}, 16);
  const Tensor b = random_tensor({2, 2}, 17, false);
  CHECK(add(b, b).is_leaf());
  CHECK_FALSE(add(a, b).is_leaf());
  NoGradGuard no_grad;
  CHECK(add(a, b).is_leaf());
}
