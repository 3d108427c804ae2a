// Tests of attention (src/ops/attention.cpp): causal softmax(q kᵀ / sqrt(HS)) v against a double
// reference, with T spanning several query blocks, its three gradients, and shape errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

std::vector<double> reference_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  const auto qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  const int64_t bh = q.size(0) * q.size(1), t = q.size(2), hs = q.size(3);
  const double scale = 1.0 / std::sqrt(double(hs));
  std::vector<double> out(qv.size(), 0.0), p(t);
  for (int64_t h = 0; h < bh; ++h) {
    const int64_t off = h * t * hs;
    for (int64_t i = 0; i < t; ++i) {
      double m = -INFINITY, s = 0;
      for (int64_t j = 0; j <= i; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < hs; ++d) dot += double(qv[off + i * hs + d]) * kv[off + j * hs + d];
        p[j] = dot * scale;
        m = std::max(m, p[j]);
      }
      for (int64_t j = 0; j <= i; ++j) s += (p[j] = std::exp(p[j] - m));
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t d = 0; d < hs; ++d) out[off + i * hs + d] += p[j] / s * vv[off + j * hs + d];
    }
  }
  return out;
}

}  // namespace

TEST_CASE("attention matches a causal double reference across query blocks", "[attention]") {
  for (int64_t t : {1, 5, 64, 150}) {
    INFO("T " << t);
    const Tensor q = random_tensor({2, 3, t, 16}, 1, false);
    const Tensor k = random_tensor({2, 3, t, 16}, 2, false);
    const Tensor v = random_tensor({2, 3, t, 16}, 3, false);
    const Tensor out = attention(q, k, v);
    CHECK(out.shape() == q.shape());
    CHECK(close_ratio(out.to_vector(), reference_attention(q, k, v), 1e-4, 1e-5) <= 1);
  }
}

TEST_CASE("attention's first position attends only to itself", "[attention]") {
  const Tensor q = random_tensor({1, 1, 4, 8}, 4, false);
  const Tensor k = random_tensor({1, 1, 4, 8}, 5, false);
  const Tensor v = random_tensor({1, 1, 4, 8}, 6, false);
  const auto out = attention(q, k, v).to_vector(), vv = v.to_vector();
  for (int d = 0; d < 8; ++d) CHECK(out[d] == Approx(vv[d]).margin(1e-6));
}

TEST_CASE("attention gradients match finite differences, including past one query block", "[attention][grad]") {
  for (int64_t t : {6, 67}) {
    INFO("T " << t);
    const Tensor q = random_tensor({1, 2, t, 3}, 7);
    const Tensor k = random_tensor({1, 2, t, 3}, 8);
    const Tensor v = random_tensor({1, 2, t, 3}, 9);
    const auto r = gradcheck([](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2]); }, {q, k, v});
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("attention accepts transposed (B, T, NH, HS) views", "[attention]") {
  const Tensor base = random_tensor({2, 7, 3, 4}, 10, false);  // (B, T, NH, HS)
  const Tensor q = transpose(base, 1, 2);                      // (B, NH, T, HS), strided
  const Tensor out = attention(q, q, q);
  CHECK(close_ratio(out.to_vector(), reference_attention(q, q, q), 1e-4, 1e-5) <= 1);
}

TEST_CASE("attention rejects mismatched or non-4-D inputs", "[attention][errors]") {
  const Tensor q = Tensor::zeros({1, 2, 3, 4});
  CHECK_THROWS_AS(attention(q, Tensor::zeros({1, 2, 3, 5}), q), Error);
  CHECK_THROWS_AS(attention(Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 3, 4})), Error);
  CHECK_THROWS_WITH(attention(q, q, Tensor::zeros({1, 2, 4, 4})), Catch::Contains("attention") && Catch::Contains("(1, 2, 4, 4)"));
}
