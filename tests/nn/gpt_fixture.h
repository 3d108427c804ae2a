// Loads the PyTorch reference fixtures (tests/reference/fixtures/gpt_*.json) into lmforge types,
// and compares tensors with a tolerance scaled to each tensor's magnitude. Shared by the GPT and
// AdamW tests, which check against the same reference model.
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "lmforge/nn/gpt.h"

namespace lmf_test {

inline nlohmann::json load_fixture(const std::string& name) {
  const std::string path = std::string(LMF_SOURCE_DIR) + "/tests/reference/fixtures/" + name;
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

inline lmf::Tensor tensor_from_json(const nlohmann::json& j) {
  return lmf::Tensor::from_vector(j.at("data").get<std::vector<float>>(),
                                  j.at("shape").get<lmf::Shape>());
}

inline lmf::nn::StateDict state_from_json(const nlohmann::json& j) {
  lmf::nn::StateDict out;
  for (const auto& [name, t] : j.items()) out.emplace_back(name, tensor_from_json(t));
  return out;
}

inline lmf::nn::GPTConfig config_from_json(const nlohmann::json& j) {
  lmf::nn::GPTConfig c;
  c.n_layer = j.at("n_layer");
  c.n_head = j.at("n_head");
  c.n_embd = j.at("n_embd");
  c.block_size = j.at("block_size");
  c.vocab_size = j.at("vocab_size");
  c.dropout = j.at("dropout");
  c.bias = j.at("bias");
  return c;
}

inline lmf::Tensor ids_from_json(const nlohmann::json& j) {
  std::vector<int32_t> values;
  for (const auto& row : j)
    for (const auto& v : row) values.push_back(v.get<int32_t>());
  return lmf::Tensor::from_vector(values, {static_cast<int64_t>(j.size()),
                                           static_cast<int64_t>(j.at(0).size())});
}

/// Largest |actual - expected| divided by max(max|expected|, floor): the error relative to the
/// tensor's own scale, so one tolerance fits logits and tiny gradients alike.
inline double scaled_max_error(const lmf::Tensor& actual, const nlohmann::json& expected,
                               double floor = 1e-3) {
  const std::vector<float> a = actual.to_vector();
  const std::vector<double> e = expected.at("data").get<std::vector<double>>();
  REQUIRE(actual.shape() == expected.at("shape").get<lmf::Shape>());
  double scale = floor, err = 0.0;
  for (double v : e) scale = std::max(scale, std::abs(v));
  for (std::size_t i = 0; i < e.size(); ++i) err = std::max(err, std::abs(double(a[i]) - e[i]));
  return err / scale;
}

/// The 2-layer, 16-channel GPT (vocabulary 31, block 8) of the GPT tests that need no fixture.
inline lmf::nn::GPTConfig tiny_gpt_config() {
  lmf::nn::GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.block_size = 8;
  c.vocab_size = 31;
  return c;
}

}  // namespace lmf_test
