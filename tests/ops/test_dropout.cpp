// Tests of dropout (src/ops/dropout.cpp): identity when off, the mask as a pure function of the
// generator's (seed, offset) (hence independent of threads), inverted scaling, and the gradient.
#include <catch2/catch.hpp>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

TEST_CASE("dropout is the identity when not training or p is 0, and draws nothing", "[dropout]") {
  const Tensor x = random_tensor({4, 5}, 1);
  Generator gen(7);
  CHECK(dropout(x, 0.5f, false, gen).is_same(x));
  CHECK(dropout(x, 0.f, true, gen).is_same(x));
  CHECK(gen.state().offset == 0);
}

TEST_CASE("dropout keeps elements whose Philox draw is >= p and scales them by 1/(1-p)", "[dropout]") {
  const int64_t n = 100000;
  const Tensor x = Tensor::ones({n});
  Generator gen(42);
  gen.advance(123);  // a non-zero starting offset
  const Tensor out = dropout(x, 0.25f, true, gen);
  CHECK(gen.state().offset == 123 + n);
  const auto v = out.to_vector();
  int64_t zeros = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = philox_uniform(42, 123 + i) >= 0.25f;  // serial reference of the mask
    REQUIRE(v[i] == (keep ? 1.f / 0.75f : 0.f));
    zeros += !keep;
  }
  CHECK(zeros == Approx(0.25 * n).epsilon(0.03));
}

TEST_CASE("dropout draws a fresh mask per call and repeats it from the same generator state", "[dropout]") {
  const Tensor x = Tensor::ones({1000});
  Generator gen(3);
  const auto first = dropout(x, 0.5f, true, gen).to_vector();
  const auto second = dropout(x, 0.5f, true, gen).to_vector();
  CHECK(first != second);
  gen.set_state({3, 0});
  CHECK(dropout(x, 0.5f, true, gen).to_vector() == first);
}

TEST_CASE("dropout gradient applies the same mask", "[dropout][grad]") {
  const Tensor x = random_tensor({6, 7}, 2);
  const auto r = gradcheck([](const std::vector<Tensor>& in) {
    Generator gen(11);  // the same mask on every evaluation
    return dropout(in[0], 0.3f, true, gen);
  }, {x});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("dropout with p = 1 zeroes everything and rejects p outside [0, 1]", "[dropout][errors]") {
  Generator gen(1);
  for (float v : dropout(Tensor::ones({10}), 1.f, true, gen).to_vector()) CHECK(v == 0.f);
  CHECK_THROWS_AS(dropout(Tensor::ones({10}), 1.5f, true, gen), Error);
  CHECK_THROWS_AS(dropout(Tensor::ones({10}), -0.1f, true, gen), Error);
  CHECK_THROWS_AS(dropout(Tensor::zeros({10}, DType::i32), 0.1f, true, gen), Error);
}
