// Tests of embedding (src/ops/embedding.cpp): lookups with i32 and u16 ids, the scatter-sum
// gradient with repeated ids (deterministic), and errors for out-of-range ids and bad dtypes.
#include <catch2/catch.hpp>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

TEST_CASE("embedding copies the rows of its ids, for i32 and u16 ids", "[embedding]") {
  const Tensor w = random_tensor({10, 70}, 1, false);  // C spans two channel blocks
  const std::vector<int32_t> ids = {3, 0, 9, 3, 7, 1};
  const auto wv = w.to_vector();
  std::vector<double> expected;
  for (int32_t id : ids)
    for (int j = 0; j < 70; ++j) expected.push_back(wv[id * 70 + j]);
  const Tensor ids_i32 = Tensor::from_vector(ids, {2, 3});
  const Tensor out = embedding(w, ids_i32);
  CHECK(out.shape() == Shape{2, 3, 70});
  CHECK(close_ratio(out.to_vector(), expected, 0, 0) <= 1);
  const Tensor ids_u16 = ids_i32.to(DType::u16);
  CHECK(close_ratio(embedding(w, ids_u16).to_vector(), expected, 0, 0) <= 1);
}

TEST_CASE("embedding gradient sums the rows of repeated ids", "[embedding][grad]") {
  const Tensor w = random_tensor({6, 5}, 2);
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 4, 1, 1, 0}, {5});
  const auto r = gradcheck([ids](const std::vector<Tensor>& in) { return embedding(in[0], ids); }, {w});
  INFO(r.report);
  CHECK(r.ok);

  // Exact values: the gradient of row 1 is three times the upstream row of ones.
  Tensor w2 = random_tensor({6, 5}, 3);
  embedding(w2, ids).backward(Tensor::ones({5, 5}));
  const auto g = w2.grad().to_vector();
  CHECK(g[1 * 5] == 3.f);
  CHECK(g[0 * 5] == 1.f);
  CHECK(g[2 * 5] == 0.f);
}

TEST_CASE("embedding backward is bitwise identical across runs", "[embedding]") {
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>(2000, 7), {2000});
  const Tensor g = random_tensor({2000, 96}, 4, false);
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    Tensor w = random_tensor({16, 96}, 5);
    embedding(w, ids).backward(g);
    if (run == 0) first = w.grad().to_vector();
    CHECK(w.grad().to_vector() == first);
  }
}

TEST_CASE("embedding rejects out-of-range ids naming the id and vocabulary size", "[embedding][errors]") {
  const Tensor w = Tensor::zeros({10, 4});
  CHECK_THROWS_WITH(embedding(w, Tensor::from_vector(std::vector<int32_t>{1, 10}, {2})),
                    Catch::Contains("10") && Catch::Contains("vocabulary of size 10"));
  CHECK_THROWS_WITH(embedding(w, Tensor::from_vector(std::vector<int32_t>{-1}, {1})),
                    Catch::Contains("id -1"));
  CHECK_THROWS_AS(embedding(w, Tensor::from_vector(std::vector<float>{12.f}, {1}).to(DType::u16)), Error);
  CHECK_THROWS_AS(embedding(w, Tensor::zeros({2}, DType::f32)), Error);
  CHECK_THROWS_AS(embedding(Tensor::zeros({10}), Tensor::zeros({2}, DType::i32)), Error);
}
