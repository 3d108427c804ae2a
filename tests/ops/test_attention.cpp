// Tests of attention (src/ops/attention.cpp): causal softmax(q kᵀ / sqrt(HS)) v against a double
// reference, with T spanning several query blocks, its three gradients, and shape errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

// q (B, NH, Tq, HS), k and v (B, NKV, Tk, HS) -> (B, NH, Tq, HS) in double: query head h reads
// key/value head h / (NH / NKV), query i sees keys 0 .. Tk - Tq + i.
std::vector<double> reference_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  const auto qv = to_double(q.contiguous_copy()), kv = to_double(k.contiguous_copy()), vv = to_double(v.contiguous_copy());
  const int64_t b = q.size(0), nh = q.size(1), tq = q.size(2), hs = q.size(3), nkv = k.size(1), tk = k.size(2);
  const double scale = 1.0 / std::sqrt(double(hs));
  std::vector<double> out(qv.size(), 0.0), p(tk);
  for (int64_t h = 0; h < b * nh; ++h) {
    const int64_t off = h * tq * hs, kv_off = ((h / nh) * nkv + (h % nh) / (nh / nkv)) * tk * hs;
    for (int64_t i = 0; i < tq; ++i) {
      const int64_t last = tk - tq + i;
      double m = -INFINITY, s = 0;
      for (int64_t j = 0; j <= last; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < hs; ++d) dot += qv[off + i * hs + d] * kv[kv_off + j * hs + d];
        p[j] = dot * scale;
        m = std::max(m, p[j]);
      }
      for (int64_t j = 0; j <= last; ++j) s += (p[j] = std::exp(p[j] - m));
      for (int64_t j = 0; j <= last; ++j)
        for (int64_t d = 0; d < hs; ++d) out[off + i * hs + d] += p[j] / s * vv[kv_off + j * hs + d];
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

TEST_CASE("attention with grouped-query heads and queries behind a cache matches the double reference",
          "[attention]") {
  struct Case { int64_t b, nh, nkv, tq, tk, hs; };
  for (const Case c : {Case{2, 4, 2, 9, 9, 5}, Case{1, 6, 1, 1, 70, 16}, Case{2, 4, 4, 3, 11, 7},
                       Case{1, 8, 2, 70, 150, 12}, Case{2, 2, 1, 65, 65, 64}}) {
    INFO("B " << c.b << " NH " << c.nh << " NKV " << c.nkv << " Tq " << c.tq << " Tk " << c.tk << " HS " << c.hs);
    const Tensor q = random_tensor({c.b, c.nh, c.tq, c.hs}, 21, false);
    const Tensor k = random_tensor({c.b, c.nkv, c.tk, c.hs}, 22, false);
    const Tensor v = random_tensor({c.b, c.nkv, c.tk, c.hs}, 23, false);
    const Tensor out = attention(q, k, v);
    CHECK(out.shape() == q.shape());
    CHECK(close_ratio(out.to_vector(), reference_attention(q, k, v), 1e-4, 1e-5) <= 1);
  }
}

TEST_CASE("attention's last query equals the full sequence's last row (a cached decoding step)", "[attention]") {
  const Tensor q = random_tensor({1, 4, 6, 8}, 24, false), k = random_tensor({1, 2, 6, 8}, 25, false);
  const Tensor v = random_tensor({1, 2, 6, 8}, 26, false);
  const auto full = attention(q, k, v).to_vector();
  const auto last = attention(slice(q, 2, 5, 6), k, v).to_vector();  // (1, 4, 1, 8)
  for (int64_t h = 0; h < 4; ++h)
    for (int64_t d = 0; d < 8; ++d) CHECK(last[h * 8 + d] == Approx(full[(h * 6 + 5) * 8 + d]).margin(1e-6));
}

TEST_CASE("attention gradients with grouped-query heads and queries behind a cache match finite differences",
          "[attention][grad]") {
  struct Case { int64_t nh, nkv, tq, tk, hs; };
  for (const Case c : {Case{4, 2, 5, 5, 3}, Case{3, 1, 2, 7, 5}, Case{2, 2, 4, 9, 2}, Case{4, 2, 67, 70, 3}}) {
    INFO("NH " << c.nh << " NKV " << c.nkv << " Tq " << c.tq << " Tk " << c.tk << " HS " << c.hs);
    const Tensor q = random_tensor({2, c.nh, c.tq, c.hs}, 27);
    const Tensor k = random_tensor({2, c.nkv, c.tk, c.hs}, 28);
    const Tensor v = random_tensor({2, c.nkv, c.tk, c.hs}, 29);
    const auto r = gradcheck([](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2]); }, {q, k, v});
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("attention reads permuted and sliced views in place with the same result and gradients",
          "[attention][grad]") {
  // q from a (B, T, NH, HS) projection, k and v the first 6 positions of (B, NKV, capacity 10, HS) buffers.
  const Tensor qb = random_tensor({2, 4, 4, 3}, 30), kb = random_tensor({2, 2, 10, 3}, 31);
  const Tensor vb = random_tensor({2, 2, 10, 3}, 32);
  const auto f = [](const std::vector<Tensor>& in) {
    return attention(transpose(in[0], 1, 2), slice(in[1], 2, 0, 6), slice(in[2], 2, 0, 6));
  };
  const Tensor out = f({qb, kb, vb});
  CHECK(close_ratio(out.to_vector(),
                    reference_attention(transpose(qb, 1, 2), slice(kb, 2, 0, 6), slice(vb, 2, 0, 6)), 1e-4,
                    1e-5) <= 1);
  const auto r = gradcheck(f, {qb, kb, vb});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("attention rejects heads that do not group and more queries than keys", "[attention][errors]") {
  CHECK_THROWS_WITH(attention(Tensor::zeros({1, 3, 2, 4}), Tensor::zeros({1, 2, 2, 4}), Tensor::zeros({1, 2, 2, 4})),
                    Catch::Contains("NKV dividing NH") && Catch::Contains("(1, 2, 2, 4)"));
  CHECK_THROWS_WITH(attention(Tensor::zeros({1, 2, 5, 4}), Tensor::zeros({1, 2, 4, 4}), Tensor::zeros({1, 2, 4, 4})),
                    Catch::Contains("Tq <= Tk"));
  CHECK_THROWS_AS(attention(Tensor::zeros({2, 2, 1, 4}), Tensor::zeros({1, 2, 4, 4}), Tensor::zeros({1, 2, 4, 4})),
                  Error);
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
