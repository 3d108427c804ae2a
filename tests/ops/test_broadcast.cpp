// Tests of NumPy broadcasting in add, sub, mul and div (src/ops/elementwise.cpp, src/ops/broadcast.cpp):
// values against a double reference that indexes each operand by the broadcast rule, gradients by
// finite differences for every form (fast periodic and strided), strided inputs, and the errors.
#include <catch2/catch.hpp>

#include <functional>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

// out[i] = op(a[ia], b[ib]) in double, the indices derived from the broadcast rule directly.
std::vector<double> reference(const Tensor& a, const Tensor& b, const Shape& out_shape,
                              const std::function<double(double, double)>& op) {
  const auto av = a.to_vector(), bv = b.to_vector();
  const int nd = static_cast<int>(out_shape.size());
  std::vector<double> out(shape_numel(out_shape));
  for (int64_t i = 0; i < static_cast<int64_t>(out.size()); ++i) {
    int64_t rest = i, ia = 0, ib = 0, sa = 1, sb = 1;
    for (int d = nd - 1; d >= 0; --d) {
      const int64_t idx = rest % out_shape[d];
      rest /= out_shape[d];
      const int da = d - (nd - a.dim()), db = d - (nd - b.dim());
      if (da >= 0) {
        ia += (a.shape()[da] == 1 ? 0 : idx) * sa;
        sa *= a.shape()[da];
      }
      if (db >= 0) {
        ib += (b.shape()[db] == 1 ? 0 : idx) * sb;
        sb *= b.shape()[db];
      }
    }
    out[i] = op(av[ia], bv[ib]);
  }
  return out;
}

struct Pair {
  Shape a, b, out;
};
// Fast periodic forms first, then the strided ones.
const std::vector<Pair> kPairs = {
    {{2, 3, 4}, {2, 3, 4}, {2, 3, 4}}, {{2, 3, 4}, {4}, {2, 3, 4}},       {{2, 3, 4}, {1, 1, 4}, {2, 3, 4}},
    {{2, 3, 4}, {}, {2, 3, 4}},        {{2, 3, 1}, {2, 3, 4}, {2, 3, 4}}, {{1, 5}, {4, 1}, {4, 5}},
    {{3, 4}, {2, 2, 3, 4}, {2, 2, 3, 4}}, {{2, 1, 4}, {1, 3, 1}, {2, 3, 4}}, {{}, {3, 2}, {3, 2}},
    {{2, 3, 4}, {2, 3, 1}, {2, 3, 4}},
    // Equal sizes, different ranks (a batch of one against an unbatched operand).
    {{3, 4}, {1, 3, 4}, {1, 3, 4}},    {{1, 3, 4}, {3, 4}, {1, 3, 4}},
};

Tensor positive(const Shape& shape, uint64_t seed) {  // divisors in [0.5, 2.5)
  Generator gen(seed);
  Tensor t = Tensor::rand(shape, gen, 0.5f, 2.5f);
  t.set_requires_grad(true);
  return t;
}

}  // namespace

TEST_CASE("add, sub, mul and div broadcast like NumPy", "[broadcast]") {
  for (const Pair& p : kPairs) {
    INFO("a " << shape_str(p.a) << " b " << shape_str(p.b));
    const Tensor a = random_tensor(p.a, 1, false), b = random_tensor(p.b, 2, false), bp = positive(p.b, 3);
    CHECK(add(a, b).shape() == p.out);
    CHECK(close_ratio(add(a, b).to_vector(), reference(a, b, p.out, std::plus<double>()), 1e-6, 1e-6) <= 1);
    CHECK(close_ratio(sub(a, b).to_vector(), reference(a, b, p.out, std::minus<double>()), 1e-6, 1e-6) <= 1);
    CHECK(close_ratio(mul(a, b).to_vector(), reference(a, b, p.out, std::multiplies<double>()), 1e-6, 1e-6) <= 1);
    CHECK(div(a, bp).shape() == p.out);
    CHECK(close_ratio(div(a, bp).to_vector(), reference(a, bp, p.out, std::divides<double>()), 1e-6, 1e-6) <= 1);
  }
}

TEST_CASE("broadcast gradients are summed back to each input's shape", "[broadcast][grad]") {
  for (const Pair& p : kPairs) {
    INFO("a " << shape_str(p.a) << " b " << shape_str(p.b));
    const Tensor a = random_tensor(p.a, 10), b = random_tensor(p.b, 11), bp = positive(p.b, 12);
    for (auto op : {&add, &sub, &mul}) {
      const auto r = gradcheck([op](const std::vector<Tensor>& in) { return op(in[0], in[1]); }, {a, b});
      INFO(r.report);
      CHECK(r.ok);
    }
    const auto r = gradcheck([](const std::vector<Tensor>& in) { return div(in[0], in[1]); }, {a, bp});
    INFO(r.report);
    CHECK(r.ok);
    CHECK(a.grad().shape() == p.a);
    CHECK(bp.grad().shape() == p.b);
  }
}

TEST_CASE("the strided path reads transposed and expanded inputs in place", "[broadcast]") {
  const Tensor base = random_tensor({4, 3}, 20, false);
  const Tensor a = transpose(base, 0, 1);             // (3, 4), strides (1, 3)
  const Tensor b = random_tensor({2, 3, 1}, 21, false);  // (2, 3, 1) * (3, 4): the strided path
  const Tensor ac = a.contiguous_copy();
  CHECK(close_ratio(mul(a, b).to_vector(), reference(ac, b, {2, 3, 4}, std::multiplies<double>()), 1e-6, 1e-6) <= 1);
  const Tensor w = random_tensor({3, 1}, 22);
  const auto r = gradcheck([](const std::vector<Tensor>& in) {
    return div(transpose(in[0], 0, 1), add(in[1], Tensor::full({1}, 3.f)));
  }, {random_tensor({4, 3}, 23), w});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("shapes that do not broadcast are rejected with both shapes named", "[broadcast][errors]") {
  const Tensor a = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH(div(a, Tensor::zeros({2})), Catch::Contains("div") && Catch::Contains("(2, 3)") && Catch::Contains("(2)"));
  CHECK_THROWS_AS(mul(Tensor::zeros({2, 1, 3}), Tensor::zeros({4, 2})), Error);
  CHECK_THROWS_AS(div(a, Tensor::zeros({3}, DType::i32)), Error);
  CHECK_THROWS_AS(add(Tensor::zeros({1, 1, 1, 1, 1, 1, 1, 1, 2}), Tensor::zeros({3, 1})), Error);
}
