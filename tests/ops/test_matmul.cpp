// Tests of matmul and linear (src/ops/matmul.cpp): 2-D, batched and shared-b products with every
// transpose combination against a double reference, their gradients, and shape errors.
#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/gemm_kernel.h"
#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

// c[i] = op(a[i]) · op(b[i or shared]) in double; a is (batch, M, K) or (batch, K, M) when ta.
std::vector<double> reference_matmul(const Tensor& a, const Tensor& b, int64_t batch, int64_t m,
                                     int64_t n, int64_t k, bool ta, bool tb, bool shared) {
  const auto av = a.to_vector(), bv = b.to_vector();
  std::vector<double> c(batch * m * n, 0.0);
  for (int64_t i = 0; i < batch; ++i) {
    const float* pa = av.data() + i * m * k;
    const float* pb = bv.data() + (shared ? 0 : i * k * n);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t col = 0; col < n; ++col) {
        double s = 0.0;
        for (int64_t j = 0; j < k; ++j)
          s += double(ta ? pa[j * m + r] : pa[r * k + j]) * (tb ? pb[col * k + j] : pb[j * n + col]);
        c[(i * m + r) * n + col] = s;
      }
  }
  return c;
}

Shape op_shape(Shape lead, int64_t rows, int64_t cols, bool trans) {
  lead.push_back(trans ? cols : rows);
  lead.push_back(trans ? rows : cols);
  return lead;
}

}  // namespace

TEST_CASE("matmul matches a double reference for 2-D, batched and shared b, all transposes", "[matmul]") {
  // Sizes large enough that the product is split into parallel row blocks.
  const int64_t m = 67, n = 45, k = 33, batch = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int mode = 0; mode < 3; ++mode) {  // 0: 2-D, 1: batched, 2: batched a, shared 2-D b
        INFO("trans_a " << ta << " trans_b " << tb << " mode " << mode);
        const Shape lead = mode == 0 ? Shape{} : Shape{batch};
        const Tensor a = random_tensor(op_shape(lead, m, k, ta), 1, false);
        const Tensor b = random_tensor(op_shape(mode == 1 ? lead : Shape{}, k, n, tb), 2, false);
        const Tensor c = matmul(a, b, ta, tb);
        Shape expected_shape = lead;
        expected_shape.insert(expected_shape.end(), {m, n});
        CHECK(c.shape() == expected_shape);
        const auto ref = reference_matmul(a, b, mode == 0 ? 1 : batch, m, n, k, ta, tb, mode != 1);
        CHECK(close_ratio(c.to_vector(), ref, 1e-5, 1e-5) <= 1);
      }
}

TEST_CASE("matmul gradients match finite differences for every layout", "[matmul][grad]") {
  const int64_t m = 3, n = 4, k = 5, batch = 2;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int mode = 0; mode < 3; ++mode) {
        INFO("trans_a " << ta << " trans_b " << tb << " mode " << mode);
        const Shape lead = mode == 0 ? Shape{} : Shape{batch};
        const Tensor a = random_tensor(op_shape(lead, m, k, ta), 3);
        const Tensor b = random_tensor(op_shape(mode == 1 ? lead : Shape{}, k, n, tb), 4);
        const auto r = gradcheck([ta, tb](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b});
        INFO(r.report);
        CHECK(r.ok);
      }
}

TEST_CASE("matmul with four dims batches over both leading dims", "[matmul]") {
  const Tensor a = random_tensor({2, 3, 4, 5}, 5, false);
  const Tensor b = random_tensor({2, 3, 5, 6}, 6, false);
  const Tensor c = matmul(a, b);
  CHECK(c.shape() == Shape{2, 3, 4, 6});
  CHECK(close_ratio(c.to_vector(), reference_matmul(a, b, 6, 4, 6, 5, false, false, false), 1e-5, 1e-5) <= 1);
}

TEST_CASE("matmul rejects mismatched inner or batch dims and 1-D operands", "[matmul][errors]") {
  CHECK_THROWS_AS(matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})), Error);
  CHECK_THROWS_AS(matmul(Tensor::zeros({2, 3}), Tensor::zeros({2, 5}), false, true), Error);
  CHECK_THROWS_AS(matmul(Tensor::zeros({2, 2, 3}), Tensor::zeros({3, 3, 5})), Error);
  CHECK_THROWS_AS(matmul(Tensor::zeros({3}), Tensor::zeros({3, 5})), Error);
  CHECK_THROWS_AS(matmul(Tensor::zeros({2, 3}, DType::i32), Tensor::zeros({3, 5})), Error);
  CHECK_THROWS_WITH(matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})),
                    Catch::Contains("matmul") && Catch::Contains("(2, 3)") && Catch::Contains("(4, 5)"));
  CHECK_NOTHROW(matmul(Tensor::zeros({2, 3}), Tensor::zeros({2, 5}), true, false));
}

TEST_CASE("linear computes x wᵀ + b over all leading dims", "[linear]") {
  const Tensor x = random_tensor({2, 5, 7}, 7, false);
  const Tensor w = random_tensor({9, 7}, 8, false);
  const Tensor b = random_tensor({9}, 9, false);
  auto ref = reference_matmul(x, w, 1, 10, 9, 7, false, true, true);
  const Tensor no_bias = linear(x, w);
  CHECK(no_bias.shape() == Shape{2, 5, 9});
  CHECK(close_ratio(no_bias.to_vector(), ref, 1e-5, 1e-5) <= 1);
  const auto bv = b.to_vector();
  for (std::size_t i = 0; i < ref.size(); ++i) ref[i] += bv[i % 9];
  CHECK(close_ratio(linear(x, w, b).to_vector(), ref, 1e-5, 1e-5) <= 1);
}

TEST_CASE("linear gradients match finite differences, with and without bias", "[linear][grad]") {
  const Tensor x = random_tensor({2, 3, 4}, 10);
  const Tensor w = random_tensor({5, 4}, 11);
  const Tensor b = random_tensor({5}, 12);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  INFO(r.report);
  CHECK(r.ok);
  r = gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w});
  CHECK(r.ok);
  // A frozen weight still passes the gradient to x.
  const Tensor frozen = random_tensor({5, 4}, 13, false);
  r = gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, frozen, b});
  CHECK(r.ok);
}

TEST_CASE("linear rejects mismatched weight and bias shapes", "[linear][errors]") {
  const Tensor x = Tensor::zeros({2, 4});
  CHECK_THROWS_AS(linear(x, Tensor::zeros({5, 3})), Error);
  CHECK_THROWS_AS(linear(x, Tensor::zeros({4})), Error);
  CHECK_THROWS_AS(linear(x, Tensor::zeros({5, 4}), Tensor::zeros({4})), Error);
  CHECK_THROWS_WITH(linear(x, Tensor::zeros({5, 3})), Catch::Contains("linear") && Catch::Contains("(5, 3)"));
}

TEST_CASE("matmul crosses the GEMM kernel's row, column and K blocks with ragged edges", "[matmul]") {
  // f32: 8 x 48 micro-tiles, 96-row a blocks, 512-deep K slices, 1536-wide b blocks; bf16 (below):
  // 8 x 32, 48, 256, 3072. Every size here leaves a partial tile, block and slice of the f32 kernel.
  const int64_t m = 203, n = 3109, k = 1100;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      INFO("trans_a " << ta << " trans_b " << tb);
      const Tensor a = random_tensor(op_shape({}, m, k, ta), 7, false);
      const Tensor b = random_tensor(op_shape({}, k, n, tb), 8, false);
      // K = 1100 float products of N(0, 1) values: rounding alone reaches ~1e-5 on entries near zero,
      // while a lost product term, tile or slice is off by ~0.1 or more.
      CHECK(close_ratio(matmul(a, b, ta, tb).to_vector(), reference_matmul(a, b, 1, m, n, k, ta, tb, true), 1e-5,
                        1e-4) <= 1);
    }
}

TEST_CASE("matmul and linear give the same bits on one thread and on several", "[matmul]") {
  if (!cpu::gemm_kernel_enabled()) {
    WARN("skipped: the Eigen fallback (no AVX-512 here) sums in an order that depends on the blocks");
    return;
  }
  const Tensor a = random_tensor({150, 70}, 9, false), b = random_tensor({70, 130}, 10, false);
  const Tensor w = random_tensor({130, 70}, 11, false), bias = random_tensor({130}, 12, false);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto c1 = matmul(a, b).to_vector(), l1 = linear(a, w, bias).to_vector();
  omp_set_num_threads(std::max(2, threads));
  const auto c2 = matmul(a, b).to_vector(), l2 = linear(a, w, bias).to_vector();
  // Two K slices, and on two threads column blocks of 272 and 248 that the kernel runs with
  // different micro-tiles (8 x 48 and 8 x 32) while one thread runs all 520 columns with 8 x 48.
  const Tensor p = random_tensor({100, 1100}, 13, false), q = random_tensor({1100, 520}, 14, false);
  omp_set_num_threads(1);
  const auto d1 = matmul(p, q).to_vector();
  omp_set_num_threads(std::max(2, threads));
  const auto d2 = matmul(p, q).to_vector();
  omp_set_num_threads(threads);
  CHECK(c1 == c2);
  CHECK(l1 == l2);
  CHECK(d1 == d2);
}

namespace {
float round_to_bf16(float x) {  // nearest even, as the kernel packs
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits = ((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16) << 16;
  std::memcpy(&x, &bits, sizeof bits);
  return x;
}
}  // namespace

TEST_CASE("bf16 products equal the product of bf16-rounded operands, summed in f32", "[matmul][bf16]") {
  if (!cpu_matmul_bf16_available()) {
    WARN("skipped: no AVX-512 BF16 here (or LMF_GEMM_EIGEN is set)");
    return;
  }
  const int64_t m = 101, n = 77, k = 301;  // odd K: the last bf16 pair of each slice is half padding
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      INFO("trans_a " << ta << " trans_b " << tb);
      const Tensor a = random_tensor(op_shape({}, m, k, ta), 13, false);
      const Tensor b = random_tensor(op_shape({}, k, n, tb), 14, false);
      const auto rounded = [](const Tensor& t) {
        std::vector<float> v = t.to_vector();
        for (float& x : v) x = round_to_bf16(x);
        return Tensor::from_vector(v, t.shape());
      };
      const auto exact_bf16 = reference_matmul(rounded(a), rounded(b), 1, m, n, k, ta, tb, true);
      const auto exact_f32 = reference_matmul(a, b, 1, m, n, k, ta, tb, true);
      std::vector<float> c;
      {
        const ComputeScope bf16({.cpu_matmul_bf16 = true});
        c = matmul(a, b, ta, tb).to_vector();
      }
      CHECK(close_ratio(c, exact_bf16, 1e-5, 1e-4) <= 1);   // only the f32 summation differs
      CHECK(close_ratio(c, exact_f32, 1e-5, 1e-4) > 1);     // and it is not the f32 product
      CHECK(close_ratio(matmul(a, b, ta, tb).to_vector(), exact_f32, 1e-5, 1e-4) <= 1);  // off again
    }
}

TEST_CASE("linear_gelu gives the bits of gelu(linear), forward and backward, across K slices", "[matmul][gelu]") {
  for (int64_t in : {7, 300}) {  // 300: the GEMM finishes in a second 256-deep slice, where the epilogue runs
    INFO("IN " << in);
    const Tensor x1 = random_tensor({3, 50, in}, 15), x2 = random_tensor({3, 50, in}, 15);
    const Tensor w1 = random_tensor({70, in}, 16), w2 = random_tensor({70, in}, 16);
    const Tensor b1 = random_tensor({70}, 17), b2 = random_tensor({70}, 17);
    const Tensor weights = random_tensor({3, 50, 70}, 18, false);
    const Tensor fused = linear_gelu(x1, w1, b1), plain = gelu(linear(x2, w2, b2));
    CHECK(fused.to_vector() == plain.to_vector());
    backward(sum(mul(fused, weights)));
    backward(sum(mul(plain, weights)));
    CHECK(x1.grad().to_vector() == x2.grad().to_vector());
    CHECK(w1.grad().to_vector() == w2.grad().to_vector());
    CHECK(b1.grad().to_vector() == b2.grad().to_vector());
  }
}

TEST_CASE("linear_gelu gradients match finite differences, with and without bias", "[matmul][gelu][grad]") {
  const Tensor x = random_tensor({2, 3, 5}, 19), w = random_tensor({4, 5}, 20), b = random_tensor({4}, 21);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return linear_gelu(in[0], in[1], in[2]); }, {x, w, b});
  INFO(r.report);
  CHECK(r.ok);
  r = gradcheck([](const std::vector<Tensor>& in) { return linear_gelu(in[0], in[1]); }, {x, w});
  INFO(r.report);
  CHECK(r.ok);
  CHECK_THROWS_WITH(linear_gelu(x, random_tensor({4, 6}, 22)), Catch::Contains("linear_gelu"));
}

TEST_CASE("bf16 products give the same bits whichever way the operands are stored", "[matmul][bf16]") {
  if (!cpu_matmul_bf16_available()) {
    WARN("skipped: no AVX-512 BF16 here (or LMF_GEMM_EIGEN is set)");
    return;
  }
  // K-contiguous operands (a as (M, K), b as (N, K)) are packed straight into bf16 pairs, the other
  // layouts through an f32 panel: the packed panels, and so the products, must be identical.
  const int64_t m = 40, n = 70, k = 512;
  const Tensor a = random_tensor({m, k}, 23, false), b_nk = random_tensor({n, k}, 24, false);
  const Tensor a_km = contiguous(transpose(a, 0, 1)), b_kn = contiguous(transpose(b_nk, 0, 1));
  const ComputeScope bf16({.cpu_matmul_bf16 = true});
  const auto direct = matmul(a, b_nk, false, true).to_vector();
  const auto via_f32 = matmul(a_km, b_kn, true, false).to_vector();
  CHECK(direct == via_f32);
}

TEST_CASE("f32 products give the same bits whichever way the operands are stored", "[matmul]") {
  if (!cpu::gemm_kernel_enabled()) {
    WARN("skipped: the Eigen fallback (no AVX-512 here) sums in an order that depends on the layout");
    return;
  }
  // The kernel reads a in place in either layout and a (K, N) b in place when the product has at
  // most 512 rows; a transposed b, ragged edge tiles and taller products go through packed panels.
  // Every path feeds the same FMAs in the same order, so the bits must agree. Sizes leave a ragged
  // row tile (m % 8), a ragged column panel (n % 48) and two K slices.
  const int64_t m = 203, n = 3109, k = 700;
  const Tensor a = random_tensor({m, k}, 31, false), b_kn = random_tensor({k, n}, 32, false);
  const Tensor a_km = contiguous(transpose(a, 0, 1)), b_nk = contiguous(transpose(b_kn, 0, 1));
  const auto in_place = matmul(a, b_kn).to_vector();              // a rows and b rows in place
  CHECK(matmul(a_km, b_kn, true, false).to_vector() == in_place);  // a columns in place
  CHECK(matmul(a, b_nk, false, true).to_vector() == in_place);     // b packed
  CHECK(matmul(a_km, b_nk, true, true).to_vector() == in_place);
  // A product taller than 512 rows packs b: its first rows must equal the short product's.
  const Tensor tall = random_tensor({600, k}, 33, false);
  const auto tall_c = matmul(tall, b_kn).to_vector();
  const auto short_c = matmul(slice(tall, 0, 0, m), b_kn).to_vector();
  CHECK(std::vector<float>(tall_c.begin(), tall_c.begin() + m * n) == short_c);
}
