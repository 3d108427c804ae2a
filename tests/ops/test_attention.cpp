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

namespace {
// q, k, v (B, NH, T, HS) split out of a (B, T, 3C) projection, as GPT code without the fused op does.
std::vector<Tensor> split_heads(const Tensor& qkv, int64_t nh) {
  const int64_t b = qkv.size(0), t = qkv.size(1), c = qkv.size(2) / 3;
  const Tensor heads = permute(reshape(qkv, {b, t, 3, nh, c / nh}), {2, 0, 3, 1, 4});  // (3, B, NH, T, HS)
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < 3; ++i) parts.push_back(reshape(slice(heads, 0, i, i + 1), {b, nh, t, c / nh}));
  return parts;
}
}  // namespace

TEST_CASE("causal_self_attention on a (B, T, 3C) projection equals split heads, attention, merged heads",
          "[attention]") {
  for (int64_t t : {1, 9, 70}) {
    INFO("T " << t);
    const int64_t b = 2, nh = 3, hs = 8, c = nh * hs;
    const Tensor qkv = random_tensor({b, t, 3 * c}, 11, false);
    const auto p = split_heads(qkv, nh);
    const std::vector<double> expect = [&] {  // (B, NH, T, HS) -> (B, T, C), from the double reference
      const auto heads = reference_attention(p[0], p[1], p[2]);
      std::vector<double> out(heads.size());
      for (int64_t bi = 0; bi < b; ++bi)
        for (int64_t h = 0; h < nh; ++h)
          for (int64_t i = 0; i < t; ++i)
            for (int64_t d = 0; d < hs; ++d)
              out[((bi * t + i) * nh + h) * hs + d] = heads[((bi * nh + h) * t + i) * hs + d];
      return out;
    }();
    const Tensor out = causal_self_attention(qkv, nh);
    CHECK(out.shape() == Shape{b, t, c});
    CHECK(close_ratio(out.to_vector(), expect, 1e-4, 1e-5) <= 1);
  }
}

TEST_CASE("causal_self_attention's gradient matches finite differences and the unfused ops", "[attention][grad]") {
  for (int64_t t : {5, 66}) {
    INFO("T " << t);
    const Tensor qkv = random_tensor({2, t, 3 * 6}, 12);  // NH 2, HS 3
    const auto r = gradcheck([](const std::vector<Tensor>& in) { return causal_self_attention(in[0], 2); }, {qkv});
    INFO(r.report);
    CHECK(r.ok);
    // The same gradient through split heads, attention and merged heads.
    const Tensor weights = random_tensor({2, t, 6}, 13, false);
    const Tensor a = random_tensor({2, t, 3 * 6}, 12), b = random_tensor({2, t, 3 * 6}, 12);
    backward(sum(mul(causal_self_attention(a, 2), weights)));
    const auto p = split_heads(b, 2);
    const Tensor merged = reshape(transpose(attention(p[0], p[1], p[2]), 1, 2), {2, t, 6});
    backward(sum(mul(merged, weights)));
    CHECK(close_ratio(a.grad().to_vector(), to_double(b.grad()), 1e-5, 1e-6) <= 1);
  }
}

TEST_CASE("causal_self_attention rejects a width that is not 3 x heads x head size", "[attention][errors]") {
  CHECK_THROWS_WITH(causal_self_attention(Tensor::zeros({1, 4, 20}), 2),
                    Catch::Contains("causal_self_attention") && Catch::Contains("(1, 4, 20)"));
  CHECK_THROWS_AS(causal_self_attention(Tensor::zeros({4, 18}), 2), Error);
  CHECK_THROWS_AS(causal_self_attention(Tensor::zeros({1, 4, 18}), 0), Error);
}
