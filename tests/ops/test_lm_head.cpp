// Tests of lm_head_cross_entropy (src/ops/lm_head.cpp): the chunked head + cross-entropy against the
// unfused composition cross_entropy(linear(x, w)) for every chunking (one row, chunks that do not
// divide N, one chunk, more than N), ignored targets (some, all), (B, T, C) inputs, finite
// differences of both gradients, and clear errors for bad targets and shapes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

struct Result {
  float loss;
  std::vector<float> dx, dw;
};

Result run(const Tensor& x_in, const Tensor& w_in, const Tensor& targets, int64_t chunk, bool fused) {
  Tensor x = x_in.detach().set_requires_grad(true), w = w_in.detach().set_requires_grad(true);
  const Tensor loss = fused ? lm_head_cross_entropy(x, w, targets, -1, chunk) : cross_entropy(linear(x, w), targets, -1);
  loss.backward();
  return {loss.item(), x.grad().to_vector(), w.grad().to_vector()};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float v : a) m = std::max(m, std::fabs(double(v)));
  return m;
}

}  // namespace

TEST_CASE("lm_head_cross_entropy equals cross_entropy(linear(x, w)) for every chunking", "[lm_head][cross_entropy]") {
  const Tensor x = random_tensor({2, 7, 16}, 11, false);      // (B, T, C)
  const Tensor w = random_tensor({37, 16}, 12, false, 0.5f);  // (V, C)
  const Tensor targets =
      Tensor::from_vector(std::vector<int32_t>{3, -1, 36, 0, 5, 5, 20, -1, 1, 2, 30, 31, -1, 9}, {2, 7});
  const Result ref = run(x, w, targets, 0, false);
  for (int64_t chunk : {int64_t(0), int64_t(1), int64_t(3), int64_t(5), int64_t(14), int64_t(100)}) {
    CAPTURE(chunk);
    const Result got = run(x, w, targets, chunk, true);
    // The same products row by row; only the order of the loss's sum over chunks differs.
    CHECK(got.loss == Approx(ref.loss).epsilon(1e-6));
    CHECK(max_abs_diff(got.dx, ref.dx) <= 1e-6 * std::max(1.0, max_abs(ref.dx)));
    CHECK(max_abs_diff(got.dw, ref.dw) <= 1e-6 * std::max(1.0, max_abs(ref.dw)));
  }
}

TEST_CASE("lm_head_cross_entropy gradients match finite differences", "[lm_head][grad]") {
  const Tensor x = random_tensor({6, 5}, 21);
  const Tensor w = random_tensor({9, 5}, 22);
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>{1, -1, 8, 0, 3, 3}, {6});
  const auto r = gradcheck(
      [targets](const std::vector<Tensor>& in) { return lm_head_cross_entropy(in[0], in[1], targets, -1, 4); },
      {x, w});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("lm_head_cross_entropy with every target ignored is 0 with zero gradients", "[lm_head]") {
  const Tensor x = random_tensor({4, 8}, 31, false);
  const Tensor w = random_tensor({10, 8}, 32, false);
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>{-1, -1, -1, -1}, {4});
  const Result got = run(x, w, targets, 3, true);
  CHECK(got.loss == 0.f);
  CHECK(max_abs(got.dx) == 0.0);
  CHECK(max_abs(got.dw) == 0.0);
}

TEST_CASE("lm_head_cross_entropy names bad targets and shapes", "[lm_head]") {
  const Tensor x = random_tensor({3, 4}, 41, false);
  const Tensor w = random_tensor({6, 4}, 42, false);
  CHECK_THROWS_WITH(lm_head_cross_entropy(x, w, Tensor::from_vector(std::vector<int32_t>{0, 6, 1}, {3})),
                    Catch::Contains("6") && Catch::Contains("position 1"));
  CHECK_THROWS_WITH(lm_head_cross_entropy(x, random_tensor({6, 5}, 43, false),
                                          Tensor::from_vector(std::vector<int32_t>{0, 1, 2}, {3})),
                    Catch::Contains("lm_head_cross_entropy"));
  CHECK_THROWS_WITH(lm_head_cross_entropy(x, w, Tensor::from_vector(std::vector<int32_t>{0, 1}, {2})),
                    Catch::Contains("does not match targets"));
}
