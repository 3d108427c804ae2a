// Tests of rms_norm and add_rms_norm (src/ops/rms_norm.cpp): values against a double reference,
// gradients by finite differences, the fused add giving the bits of its two steps, shape errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

std::vector<double> reference_rms_norm(const Tensor& x, const Tensor& w, double eps) {
  const auto xv = x.to_vector(), wv = w.to_vector();
  const std::size_t c = wv.size(), n = xv.size() / c;
  std::vector<double> out(xv.size());
  for (std::size_t i = 0; i < n; ++i) {
    double ss = 0;
    for (std::size_t j = 0; j < c; ++j) ss += double(xv[i * c + j]) * xv[i * c + j];
    const double r = 1.0 / std::sqrt(ss / c + eps);
    for (std::size_t j = 0; j < c; ++j) out[i * c + j] = xv[i * c + j] * r * wv[j];
  }
  return out;
}

}  // namespace

TEST_CASE("rms_norm matches a double reference over odd and vector-sized rows", "[rms_norm]") {
  for (int64_t c : {5, 16, 48, 100}) {
    INFO("C = " << c);
    const Tensor x = add(random_tensor({3, 7, c}, 1, false, 2.f), Tensor::full({1}, 0.7f));
    const Tensor w = random_tensor({c}, 2, false);
    CHECK(close_ratio(rms_norm(x, w, 1e-5f).to_vector(), reference_rms_norm(x, w, 1e-5), 1e-5, 1e-6) <= 1);
    CHECK(close_ratio(rms_norm(x, w, 0.5f).to_vector(), reference_rms_norm(x, w, 0.5), 1e-5, 1e-6) <= 1);
  }
}

TEST_CASE("rms_norm gradients match finite differences", "[rms_norm][grad]") {
  const Tensor x = random_tensor({2, 3, 6}, 4);
  const Tensor w = random_tensor({6}, 5);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-5f); }, {x, w});
  INFO(r.report);
  CHECK(r.ok);
  // A non-contiguous input (a transposed view) takes the same path after its copy.
  const Tensor xt = random_tensor({6, 4}, 6);
  r = gradcheck([](const std::vector<Tensor>& in) { return rms_norm(transpose(in[0], 0, 1), in[1], 1e-3f); },
                {xt, random_tensor({6}, 7)});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("rms_norm weight gradient over many rows is deterministic and equals the row sum", "[rms_norm]") {
  const Tensor x = random_tensor({700, 64}, 7, false);
  const Tensor g = random_tensor({700, 64}, 8, false);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    Tensor w = random_tensor({64}, 9);
    rms_norm(x, w).backward(g);
    if (run == 0) first = w.grad().to_vector();
    CHECK(w.grad().to_vector() == first);
  }
  // dw = sum over rows of g * x * rstd, in double.
  const auto xv = x.to_vector(), gv = g.to_vector();
  std::vector<double> expected(64, 0.0);
  for (int64_t i = 0; i < 700; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < 64; ++j) ss += double(xv[i * 64 + j]) * xv[i * 64 + j];
    const double r = 1.0 / std::sqrt(ss / 64 + 1e-6);
    for (int64_t j = 0; j < 64; ++j) expected[j] += double(gv[i * 64 + j]) * xv[i * 64 + j] * r;
  }
  CHECK(close_ratio(first, expected, 1e-4, 1e-4) <= 1);
}

TEST_CASE("add_rms_norm gives the bits of add then rms_norm, forward and backward", "[rms_norm]") {
  const Tensor x1 = random_tensor({2, 9, 37}, 31), x2 = random_tensor({2, 9, 37}, 31);
  const Tensor y1 = random_tensor({2, 9, 37}, 32), y2 = random_tensor({2, 9, 37}, 32);
  const Tensor w1 = random_tensor({37}, 33), w2 = random_tensor({37}, 33);
  const auto [sum1, out1] = add_rms_norm(x1, y1, w1, 1e-5f);
  const Tensor sum2 = add(x2, y2), out2 = rms_norm(sum2, w2, 1e-5f);
  CHECK(sum1.to_vector() == sum2.to_vector());
  CHECK(out1.to_vector() == out2.to_vector());
  // Both results carry gradient: the residual stream and the normalised branch.
  const Tensor gs = random_tensor({2, 9, 37}, 34, false), go = random_tensor({2, 9, 37}, 35, false);
  add(sum(mul(sum1, gs)), sum(mul(out1, go))).backward();
  add(sum(mul(sum2, gs)), sum(mul(out2, go))).backward();
  CHECK(x1.grad().to_vector() == x2.grad().to_vector());
  CHECK(y1.grad().to_vector() == y2.grad().to_vector());
  CHECK(w1.grad().to_vector() == w2.grad().to_vector());
}

TEST_CASE("rms_norm rejects a weight of the wrong size, integer input and mismatched add shapes", "[rms_norm][errors]") {
  const Tensor x = Tensor::zeros({2, 4});
  CHECK_THROWS_WITH(rms_norm(x, Tensor::ones({3})), Catch::Contains("rms_norm") && Catch::Contains("(4)"));
  CHECK_THROWS_AS(rms_norm(Tensor::zeros({2, 4}, DType::i32), Tensor::ones({4})), Error);
  CHECK_THROWS_AS(rms_norm(x, Tensor::ones({4}), -1.f), Error);
  CHECK_THROWS_WITH(add_rms_norm(x, Tensor::zeros({2, 5}), Tensor::ones({4})), Catch::Contains("add_rms_norm"));
}
