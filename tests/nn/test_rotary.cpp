// nn::RotaryEmbedding (src/nn/rotary.cpp): inverse frequencies and cos/sin tables against the
// float64 transformers rules (default, linear, llama3), the tables as non-persistent buffers, and
// config errors.
#include <catch2/catch.hpp>

#include "lmforge/nn/rotary.h"
#include "nn/block_fixture.h"

using namespace lmf;
using namespace lmf::nn;

namespace {

RotaryConfig rotary_config_of(const nlohmann::json& j) {
  RotaryConfig c;
  c.head_dim = j.at("head_dim");
  c.theta = j.at("theta");
  c.max_positions = j.at("max_positions");
  if (j.contains("scaling")) {
    const auto& s = j.at("scaling");
    c.scaling.type = s.at("type") == "linear" ? RopeScalingType::linear : RopeScalingType::llama3;
    c.scaling.factor = s.at("factor");
    if (c.scaling.type == RopeScalingType::llama3) {
      c.scaling.low_freq_factor = s.at("low_freq_factor");
      c.scaling.high_freq_factor = s.at("high_freq_factor");
      c.scaling.original_max_position_embeddings = s.at("original_max_position_embeddings");
    }
  }
  return c;
}

}  // namespace

TEST_CASE("RotaryEmbedding's frequencies and tables match transformers' default, linear and llama3 rules",
          "[rotary]") {
  for (const char* name : {"default", "linear", "llama3"}) {
    INFO("case " << name);
    const auto& c = lmf_test::block_case(name);
    const RotaryEmbedding rope(rotary_config_of(c.at("config")));
    const auto expected = c.at("inv_freq").at("data").get<std::vector<double>>();
    REQUIRE(rope.inv_freq().size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i)  // both in double: only the last bits differ
      CHECK(rope.inv_freq()[i] == Approx(expected[i]).epsilon(1e-12));
    const auto positions = c.at("positions").get<std::vector<int64_t>>();
    const auto cos = c.at("cos").at("data").get<std::vector<double>>();
    const auto sin = c.at("sin").at("data").get<std::vector<double>>();
    const int64_t half = rope.config().head_dim / 2;
    const auto table_cos = rope.cos().to_vector(), table_sin = rope.sin().to_vector();
    for (std::size_t p = 0; p < positions.size(); ++p)
      for (int64_t i = 0; i < half; ++i) {  // f32 rounding of a value in [-1, 1]: <= 6e-8
        CHECK(std::abs(table_cos[positions[p] * half + i] - cos[p * half + i]) <= 1e-7);
        CHECK(std::abs(table_sin[positions[p] * half + i] - sin[p * half + i]) <= 1e-7);
      }
  }
}

TEST_CASE("llama3 scaling divides low frequencies by the factor and keeps high ones", "[rotary]") {
  RotaryConfig plain{64, 500000.0, 16, {}};
  RotaryConfig scaled = plain;
  scaled.scaling = {RopeScalingType::llama3, 8.0, 1.0, 4.0, 8192};
  const auto f = rotary_inv_freq(plain), g = rotary_inv_freq(scaled);
  CHECK(g.front() == f.front());                  // wavelength 2π: high frequency, unchanged
  CHECK(g.back() == Approx(f.back() / 8.0));      // wavelength >> 8192: divided by the factor
  int blended = 0;
  for (std::size_t i = 0; i < f.size(); ++i) blended += g[i] < f[i] && g[i] > f[i] / 8.0;
  CHECK(blended > 0);  // the smooth band between
}

TEST_CASE("rotary tables are non-persistent buffers: never in the state dict, moved with the module",
          "[rotary]") {
  RotaryEmbedding rope(RotaryConfig{8, 10000.0, 32, {}});
  CHECK(rope.state_dict().empty());
  CHECK(rope.named_parameters().empty());
  const auto buffers = rope.named_buffers();
  REQUIRE(buffers.size() == 2);
  CHECK(buffers[0].first == "cos");
  CHECK(buffers[0].second.shape() == Shape{32, 4});
  CHECK_FALSE(buffers[0].second.requires_grad());
  CHECK(rope.buffer("sin").is_same(rope.sin()));
}

TEST_CASE("RotaryEmbedding refuses odd heads and inconsistent scaling", "[rotary][errors]") {
  CHECK_THROWS_WITH(RotaryEmbedding(RotaryConfig{7, 10000.0, 8, {}}), Catch::Contains("head_dim"));
  CHECK_THROWS_WITH(RotaryEmbedding(RotaryConfig{8, 0.0, 8, {}}), Catch::Contains("rope_theta"));
  RotaryConfig bad{8, 10000.0, 8, {RopeScalingType::llama3, 8.0, 4.0, 1.0, 8192}};
  CHECK_THROWS_WITH(RotaryEmbedding(bad), Catch::Contains("low_freq_factor"));
  bad.scaling = {RopeScalingType::linear, 0.0};
  CHECK_THROWS_WITH(RotaryEmbedding(bad), Catch::Contains("factor"));
  RotaryEmbedding rope(RotaryConfig{8, 10000.0, 4, {}});
  CHECK_THROWS_WITH(rope.forward(Tensor::zeros({1, 1, 3, 8}), 2), Catch::Contains("exceed"));
}
