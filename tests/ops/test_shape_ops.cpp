// Tests of max over a dim (src/ops/reduce.cpp), cat, split, chunk, where, gather (src/ops/shape_ops.cpp)
// and expand (src/ops/views.cpp): values against direct index arithmetic, gradients by finite
// differences, the documented tie and condition rules, and the errors.
#include <catch2/catch.hpp>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

void check_grad(const OpFn& fn, const std::vector<Tensor>& inputs) {
  const auto r = gradcheck(fn, inputs);
  INFO(r.report);
  CHECK(r.ok);
}

}  // namespace

TEST_CASE("max over any dim, keepdim or not, with its gradient", "[max]") {
  const Tensor x = random_tensor({2, 3, 4}, 1);
  const auto xv = x.to_vector();
  for (int dim : {0, 1, 2, -1}) {
    for (bool keep : {false, true}) {
      INFO("dim " << dim << " keepdim " << keep);
      const Tensor m = lmf::max(x, dim, keep);
      const int d = dim < 0 ? dim + 3 : dim;
      Shape expect_shape = x.shape();
      if (keep) expect_shape[d] = 1;
      else expect_shape.erase(expect_shape.begin() + d);
      CHECK(m.shape() == expect_shape);
      // Reference: the outer loop over the kept indices, the max over d.
      std::vector<double> expected;
      for (int i0 = 0; i0 < (d == 0 ? 1 : 2); ++i0)
        for (int i1 = 0; i1 < (d == 1 ? 1 : 3); ++i1)
          for (int i2 = 0; i2 < (d == 2 ? 1 : 4); ++i2) {
            double best = -1e30;
            for (int k = 0; k < x.shape()[d]; ++k) {
              const int j0 = d == 0 ? k : i0, j1 = d == 1 ? k : i1, j2 = d == 2 ? k : i2;
              best = std::max(best, double(xv[(j0 * 3 + j1) * 4 + j2]));
            }
            expected.push_back(best);
          }
      CHECK(close_ratio(m.to_vector(), expected, 0, 0) <= 1);
      check_grad([dim, keep](const std::vector<Tensor>& in) { return lmf::max(in[0], dim, keep); }, {x});
    }
  }
}

TEST_CASE("max sends a tie's gradient to the first maximum", "[max]") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.f, 3.f, 3.f, 0.f, 2.f, 2.f}, {2, 3});
  x.set_requires_grad(true);
  const Tensor m = lmf::max(x, 1);
  CHECK(m.to_vector() == std::vector<float>{3.f, 2.f});
  m.backward(Tensor::from_vector(std::vector<float>{5.f, 7.f}, {2}));
  CHECK(x.grad().to_vector() == std::vector<float>{0.f, 5.f, 0.f, 0.f, 7.f, 0.f});
  CHECK_THROWS_AS(lmf::max(Tensor::zeros({2, 0}), 1), Error);
  CHECK_THROWS_AS(lmf::max(x, 2), Error);
}

TEST_CASE("sum and mean over any dim broadcast their gradient back", "[reduce][grad]") {
  const Tensor x = random_tensor({2, 3, 4}, 2);
  for (int dim : {0, 1, -1})
    for (bool keep : {false, true}) {
      INFO("dim " << dim << " keepdim " << keep);
      check_grad([=](const std::vector<Tensor>& in) { return sum(in[0], dim, keep); }, {x});
      check_grad([=](const std::vector<Tensor>& in) { return mean(in[0], dim, keep); }, {x});
    }
}

TEST_CASE("cat joins along any dim and splits the gradient back", "[cat][grad]") {
  const Tensor a = random_tensor({2, 1, 3}, 3), b = random_tensor({2, 4, 3}, 4), c = random_tensor({2, 2, 3}, 5);
  const Tensor out = cat({a, b, c}, 1);
  REQUIRE(out.shape() == Shape{2, 7, 3});
  const auto ov = out.to_vector(), av = a.to_vector(), bv = b.to_vector(), cv = c.to_vector();
  bool same = true;
  for (int i = 0; i < 2; ++i)
    for (int t = 0; t < 7; ++t)
      for (int j = 0; j < 3; ++j) {
        const float want = t < 1 ? av[(i * 1 + t) * 3 + j] : t < 5 ? bv[(i * 4 + t - 1) * 3 + j] : cv[(i * 2 + t - 5) * 3 + j];
        same = same && ov[(i * 7 + t) * 3 + j] == want;
      }
  CHECK(same);
  for (int dim : {0, 1, 2, -1}) {
    INFO("dim " << dim);
    Shape s = {2, 3, 4};
    const Tensor x = random_tensor(s, 6);
    s[dim < 0 ? 2 : dim] = 2;
    const Tensor y = random_tensor(s, 7);
    check_grad([dim](const std::vector<Tensor>& in) { return cat({in[0], in[1]}, dim); }, {x, y});
  }
  CHECK_THROWS_WITH(cat({a, random_tensor({3, 1, 3}, 8)}, 1), Catch::Contains("cat") && Catch::Contains("(3, 1, 3)"));
  CHECK_THROWS_AS(cat({}, 0), Error);
}

TEST_CASE("split and chunk return views whose gradients land in the right place", "[split][grad]") {
  const Tensor x = random_tensor({2, 7}, 9);
  const auto parts = chunk(x, 3, 1);  // torch.chunk: 3, 3, 1
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].shape() == Shape{2, 3});
  CHECK(parts[2].shape() == Shape{2, 1});
  CHECK(parts[1].storage() == x.storage());  // a view
  CHECK(chunk(random_tensor({5}, 1), 4, 0).size() == 3);  // 2, 2, 1 as torch.chunk
  CHECK(chunk(random_tensor({2}, 1), 4, 0).size() == 2);
  check_grad([](const std::vector<Tensor>& in) {
    const auto p = split(in[0], {1, 4, 2}, -1);
    return cat({scale(p[2], 3.f), mul(p[0], p[0]), p[1]}, 1);
  }, {x});
  CHECK_THROWS_WITH(split(x, {3, 3}, 1), Catch::Contains("split") && Catch::Contains("6"));
  CHECK_THROWS_AS(chunk(x, 0, 1), Error);
}

TEST_CASE("where broadcasts all three operands; nonzero is true", "[where][grad]") {
  const Tensor cond = Tensor::from_vector(std::vector<float>{1.f, 0.f, -0.f, 2.5f}, {4});
  const Tensor a = random_tensor({3, 1}, 10), b = random_tensor({2, 3, 4}, 11);
  const Tensor out = where(cond, a, b);
  REQUIRE(out.shape() == Shape{2, 3, 4});
  const auto ov = out.to_vector(), av = a.to_vector(), bv = b.to_vector();
  bool same = true;
  for (int i = 0; i < 24; ++i) {
    const int k = i % 4, t = (i / 4) % 3;
    same = same && ov[i] == ((k == 0 || k == 3) ? av[t] : bv[i]);
  }
  CHECK(same);
  check_grad([cond](const std::vector<Tensor>& in) { return where(cond, in[0], in[1]); }, {a, b});
  check_grad([](const std::vector<Tensor>& in) {
    return where(Tensor::from_vector(std::vector<float>{0.f, 1.f}, {2, 1}), in[0], in[1]);
  }, {random_tensor({3}, 12), random_tensor({1}, 13)});
  CHECK_THROWS_AS(where(Tensor::zeros({5}), a, b), Error);
  CHECK_THROWS_AS(where(Tensor::zeros({4}, DType::i32), a, b), Error);
}

TEST_CASE("gather picks along the last dim and scatter-adds repeated indices", "[gather][grad]") {
  const Tensor x = random_tensor({2, 5}, 14);
  const Tensor index = Tensor::from_vector(std::vector<int32_t>{4, 4, 0, 1, 2, 2}, {2, 3});
  const Tensor out = gather(x, index);
  const auto xv = x.to_vector();
  CHECK(out.to_vector() == std::vector<float>{xv[4], xv[4], xv[0], xv[6], xv[7], xv[7]});
  out.backward(Tensor::from_vector(std::vector<float>{1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}));
  CHECK(x.grad().to_vector() == std::vector<float>{3.f, 0.f, 0.f, 0.f, 3.f, 0.f, 4.f, 11.f, 0.f, 0.f});
  check_grad([index](const std::vector<Tensor>& in) { return gather(in[0], index, 1); }, {random_tensor({2, 5}, 15)});
  CHECK_THROWS_WITH(gather(x, Tensor::from_vector(std::vector<int32_t>{5}, {1, 1})), Catch::Contains("gather"));
  CHECK_THROWS_AS(gather(x, Tensor::from_vector(std::vector<int32_t>{-1, 0}, {2, 1})), Error);
  CHECK_THROWS_AS(gather(x, index, 0), Error);
  CHECK_THROWS_AS(gather(x, Tensor::zeros({2, 3})), Error);
}

TEST_CASE("expand is a stride-0 view whose gradient is summed back", "[expand][grad]") {
  const Tensor x = random_tensor({3, 1}, 16);
  const Tensor e = expand(x, {2, 3, 4});
  CHECK(e.shape() == Shape{2, 3, 4});
  CHECK(e.storage() == x.storage());
  CHECK(e.strides()[0] == 0);
  CHECK(e.strides()[2] == 0);
  const auto ev = e.contiguous_copy().to_vector(), xv = x.to_vector();
  bool same = true;
  for (int i = 0; i < 24; ++i) same = same && ev[i] == xv[(i / 4) % 3];
  CHECK(same);
  check_grad([](const std::vector<Tensor>& in) { return mul(expand(in[0], {2, -1, 4}), in[1]); },
             {x, random_tensor({2, 3, 4}, 17)});
  CHECK_THROWS_AS(expand(x, {2, 2}), Error);
  CHECK_THROWS_AS(expand(x, {4}), Error);
}

TEST_CASE("slice's gradient is placed by row copies", "[slice][grad]") {
  check_grad([](const std::vector<Tensor>& in) { return slice(in[0], 1, 1, 3); }, {random_tensor({2, 4, 3}, 18)});
  check_grad([](const std::vector<Tensor>& in) { return slice(in[0], -1, 0, 2); }, {random_tensor({3, 5}, 19)});
}
