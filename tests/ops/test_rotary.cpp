// Tests of rotary_embedding (src/ops/rotary.cpp): the rotate_half pairing against a direct double
// reference, a strided (B, T, NH, HS) input, the position offset equal to a slice of the full result,
// the backward as the inverse rotation (finite differences), norms preserved, and errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

// Tables (L, HS/2) of arbitrary angles: the op must not care where they come from.
std::pair<Tensor, Tensor> tables(int64_t positions, int64_t half, uint64_t seed) {
  const std::vector<float> angles = random_tensor({positions, half}, seed, false, 2.f).to_vector();
  std::vector<float> c(angles.size()), s(angles.size());
  for (std::size_t i = 0; i < angles.size(); ++i) {
    c[i] = std::cos(angles[i]);
    s[i] = std::sin(angles[i]);
  }
  return {Tensor::from_vector(c, {positions, half}), Tensor::from_vector(s, {positions, half})};
}

// x (B, NH, T, HS) contiguous.
std::vector<double> reference(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t offset) {
  const auto xv = x.to_vector(), cv = cos.to_vector(), sv = sin.to_vector();
  const int64_t t = x.size(2), hs = x.size(3), half = hs / 2, rows = x.numel() / hs;
  std::vector<double> out(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = offset + r % t;
    for (int64_t d = 0; d < half; ++d) {
      const double x1 = xv[r * hs + d], x2 = xv[r * hs + d + half], c = cv[p * half + d], s = sv[p * half + d];
      out[r * hs + d] = x1 * c - x2 * s;
      out[r * hs + d + half] = x2 * c + x1 * s;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("rotary_embedding rotates the pairs (d, d + HS/2) at each position", "[rotary]") {
  const auto [cos, sin] = tables(20, 8, 1);
  const Tensor x = random_tensor({2, 3, 7, 16}, 2, false);
  CHECK(close_ratio(rotary_embedding(x, cos, sin).to_vector(), reference(x, cos, sin, 0), 1e-6, 1e-6) <= 1);
  CHECK(close_ratio(rotary_embedding(x, cos, sin, 13).to_vector(), reference(x, cos, sin, 13), 1e-6, 1e-6) <= 1);
}

TEST_CASE("rotary_embedding reads a transposed (B, T, NH, HS) view and writes (B, NH, T, HS)", "[rotary]") {
  const auto [cos, sin] = tables(10, 4, 3);
  const Tensor bthd = random_tensor({2, 6, 3, 8}, 4, false);
  const Tensor view = transpose(bthd, 1, 2);  // (B, NH, T, HS), not contiguous
  const Tensor out = rotary_embedding(view, cos, sin, 2);
  CHECK(out.shape() == Shape{2, 3, 6, 8});
  CHECK(out.is_contiguous());
  CHECK(out.to_vector() == rotary_embedding(contiguous(view), cos, sin, 2).to_vector());
}

TEST_CASE("rotary_embedding at an offset equals the tail of the full sequence", "[rotary]") {
  const auto [cos, sin] = tables(12, 4, 5);
  const Tensor x = random_tensor({1, 2, 9, 8}, 6, false);
  const Tensor full = rotary_embedding(x, cos, sin, 0);
  const Tensor tail = rotary_embedding(slice(x, 2, 5, 9), cos, sin, 5);
  CHECK(tail.to_vector() == contiguous(slice(full, 2, 5, 9)).to_vector());
}

TEST_CASE("rotary_embedding preserves each pair's norm and its backward is the inverse rotation", "[rotary][grad]") {
  const auto [cos, sin] = tables(8, 3, 7);
  const Tensor x = random_tensor({2, 2, 5, 6}, 8);
  const auto xv = x.to_vector(), ov = rotary_embedding(x, cos, sin, 3).to_vector();
  for (std::size_t r = 0; r < xv.size() / 6; ++r)
    for (int d = 0; d < 3; ++d) {
      const double before = std::hypot(xv[r * 6 + d], xv[r * 6 + d + 3]);
      CHECK(std::hypot(ov[r * 6 + d], ov[r * 6 + d + 3]) == Approx(before).epsilon(1e-5));
    }
  auto r = gradcheck([&](const std::vector<Tensor>& in) { return rotary_embedding(in[0], cos, sin, 3); }, {x});
  INFO(r.report);
  CHECK(r.ok);
  const Tensor y = random_tensor({2, 4, 3, 6}, 9);  // through a transposed view
  r = gradcheck([&](const std::vector<Tensor>& in) { return rotary_embedding(transpose(in[0], 1, 2), cos, sin, 1); },
                {y});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("rotary_embedding rejects odd heads, wrong tables and positions past the table", "[rotary][errors]") {
  const auto [cos, sin] = tables(6, 4, 9);
  CHECK_THROWS_WITH(rotary_embedding(Tensor::zeros({1, 1, 2, 7}), cos, sin), Catch::Contains("even"));
  CHECK_THROWS_WITH(rotary_embedding(Tensor::zeros({1, 1, 2, 6}), cos, sin), Catch::Contains("(L, 3)"));
  CHECK_THROWS_WITH(rotary_embedding(Tensor::zeros({1, 1, 4, 8}), cos, sin, 3), Catch::Contains("exceed"));
  CHECK_THROWS_AS(rotary_embedding(Tensor::zeros({1, 4, 8}), cos, sin), Error);
}
