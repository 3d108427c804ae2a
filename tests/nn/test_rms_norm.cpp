// nn::RMSNorm (src/nn/rms_norm.cpp): Hugging Face's LlamaRMSNorm values and gradients from the
// float64 fixture, the fused residual add, and construction errors.
#include <catch2/catch.hpp>

#include "lmforge/nn/rms_norm.h"
#include "lmforge/ops.h"
#include "nn/block_fixture.h"

using namespace lmf;
using namespace lmf::nn;

TEST_CASE("RMSNorm matches Hugging Face's LlamaRMSNorm, values and gradients", "[rms_norm]") {
  const auto& c = lmf_test::block_case("rms_norm");
  RMSNorm norm(c.at("config").at("features").get<int64_t>(), c.at("config").at("eps").get<float>());
  CHECK(norm.state_dict().size() == 1);
  lmf_test::check_block(norm, c, [&](const Tensor& x) { return norm.forward(x); });
}

TEST_CASE("RMSNorm::forward_add returns the residual sum and its norm", "[rms_norm]") {
  RMSNorm norm(6, 1e-5f);
  Generator gen(3);
  const Tensor x = Tensor::randn({2, 6}, gen), y = Tensor::randn({2, 6}, gen);
  const auto [sum, out] = norm.forward_add(x, y);
  CHECK(sum.to_vector() == add(x, y).to_vector());
  CHECK(out.to_vector() == norm.forward(add(x, y)).to_vector());
}

TEST_CASE("RMSNorm refuses a non-positive size", "[rms_norm][errors]") {
  CHECK_THROWS_WITH(RMSNorm(0), Catch::Contains("RMSNorm(0)"));
}
