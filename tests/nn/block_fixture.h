// The Llama-style building-block fixtures (tests/reference/fixtures/nn_blocks.json, written by
// make_block_fixtures.py from Hugging Face's equations in float64): load a case's parameters into a
// module by their Hugging Face names, run it, and compare the output and every gradient.
#pragma once
#include <functional>

#include "nn/gpt_fixture.h"

namespace lmf_test {

/// Tolerances (scaled_max_error: max |error| over max |reference|): measured errors of these
/// float32 modules against float64 are below 1e-6 (see tests/reference/README.md); a wrong rotation
/// pairing, a missing norm or a mis-grouped head is 1e-2 or more.
constexpr double kBlockOutputTol = 1e-5;
constexpr double kBlockGradTol = 2e-5;

inline const nlohmann::json& block_case(const std::string& name) {
  static const nlohmann::json fixture = load_fixture("nn_blocks.json");
  for (const auto& c : fixture.at("cases"))
    if (c.at("name") == name) return c;
  FAIL("no fixture case " << name);
  throw;
}

/// Loads the case's parameters into `module` (strict: the names must be exactly Hugging Face's),
/// runs forward(x), backpropagates the loss weights and checks the output and every gradient.
inline void check_block(lmf::nn::Module& module, const nlohmann::json& c,
                        const std::function<lmf::Tensor(const lmf::Tensor&)>& forward) {
  INFO("case " << c.at("name").get<std::string>());
  module.load_state_dict(state_from_json(c.at("params")));
  lmf::Tensor x = tensor_from_json(c.at("x"));
  x.set_requires_grad(true);
  const lmf::Tensor out = forward(x);
  const double out_err = scaled_max_error(out, c.at("output"));
  INFO("output error " << out_err);
  CHECK(out_err <= kBlockOutputTol);
  out.backward(tensor_from_json(c.at("loss_weights")));
  for (const auto& [name, g] : c.at("grads").items()) {
    const lmf::Tensor grad = name == "x" ? x.grad() : module.parameter(name).grad();
    REQUIRE(grad.defined());
    const double err = scaled_max_error(grad, g);
    INFO("gradient of " << name << ": error " << err);
    CHECK(err <= kBlockGradTol);
  }
}

}  // namespace lmf_test
