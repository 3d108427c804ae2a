// nn::SwiGLUMLP (src/nn/swiglu_mlp.cpp): Hugging Face's names, values and gradients from the float64
// fixture of down_proj(silu(gate_proj(x)) * up_proj(x)).
#include <catch2/catch.hpp>

#include "lmforge/nn/swiglu_mlp.h"
#include "nn/block_fixture.h"

using namespace lmf;
using namespace lmf::nn;

TEST_CASE("SwiGLUMLP uses Hugging Face's parameter names and no biases by default", "[swiglu_mlp]") {
  Generator gen(1);
  SwiGLUMLP mlp(8, 12, gen);
  std::vector<std::string> names;
  for (const auto& [name, t] : mlp.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"gate_proj.weight", "up_proj.weight", "down_proj.weight"});
  SwiGLUMLP biased(8, 12, gen, true);
  CHECK(biased.has_parameter("down_proj.bias"));
}

TEST_CASE("SwiGLUMLP matches Hugging Face's LlamaMLP, values and gradients", "[swiglu_mlp]") {
  const auto& c = lmf_test::block_case("swiglu_mlp");
  Generator gen(2);
  SwiGLUMLP mlp(c.at("config").at("hidden_size").get<int64_t>(), c.at("config").at("intermediate_size").get<int64_t>(),
                gen);
  lmf_test::check_block(mlp, c, [&](const Tensor& x) { return mlp.forward(x); });
}
