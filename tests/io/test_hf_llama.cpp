// Hugging Face Llama-family directories in and out: lmforge's own checkpoints re-import bit for
// bit, config.json round-trips, and bad configs, missing shards, wrong dtypes and unknown
// architectures are each one clear error line naming the file and the key or tensor.
#include <catch2/catch.hpp>

#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/nn/llama.h"

using namespace lmf;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

fs::path fixture(const std::string& name) {
  return fs::path(LMF_SOURCE_DIR) / "tests/reference/fixtures/llama" / name;
}

// A fresh copy of a fixture directory under the test's binary dir.
fs::path copy_fixture(const std::string& name, const std::string& as) {
  const fs::path dst = fs::path(LMF_BINARY_DIR) / "test_hf_llama" / as;
  fs::remove_all(dst);
  fs::create_directories(dst.parent_path());
  fs::copy(fixture(name), dst, fs::copy_options::recursive);
  fs::permissions(dst, fs::perms::owner_all, fs::perm_options::add);
  for (const auto& e : fs::directory_iterator(dst)) fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  return dst;
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}
void write_json(const fs::path& p, const json& j) { std::ofstream(p) << j.dump(2); }

// The error message of load_model(dir); fails the test when nothing is thrown.
std::string load_error(const fs::path& dir) {
  try {
    io::load_model(dir);
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("load_model(" << dir.string() << ") did not throw");
  return {};
}

void check_one_line(const std::string& msg, const std::string& must_contain) {
  INFO(msg);
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(msg.find(must_contain) != std::string::npos);
}

// A config.json edit of the llama fixture must give an error naming `key`.
void check_config_refused(const std::string& key, const std::function<void(json&)>& edit) {
  const fs::path dir = copy_fixture("llama_gqa_llama3", "bad_config");
  json j = read_json(dir / "config.json");
  edit(j);
  write_json(dir / "config.json", j);
  const std::string msg = load_error(dir);
  check_one_line(msg, "config.json");
  check_one_line(msg, key);
}

}  // namespace

TEST_CASE("hf llama: a saved checkpoint re-imports bit-identically, with the same config.json", "[io][llama]") {
  for (const char* name : {"llama_gqa_llama3", "qwen2_bias_tied", "qwen3_qknorm_mqa", "mistral_mha_tied"}) {
    INFO("case " << name);
    std::unique_ptr<nn::CausalLM> model = io::load_model(fixture(name));
    const fs::path out = fs::path(LMF_BINARY_DIR) / "test_hf_llama" / (std::string(name) + "_saved");
    fs::remove_all(out);
    io::save(*model, out);
    CHECK(fs::exists(out / "model.safetensors"));
    const json config = read_json(out / "config.json");
    CHECK(config.at("model_type") == read_json(fixture(name) / "config.json").at("model_type"));
    // Tensors in F32 under the model's own (Hugging Face) names; tied heads write no lm_head.
    const io::SafetensorsFile st = io::read_safetensors(out / "model.safetensors");
    CHECK(st.tensors.size() == model->named_parameters().size());
    CHECK(st.tensors.count("lm_head.weight") == (config.at("tie_word_embeddings").get<bool>() ? 0u : 1u));

    std::unique_ptr<nn::CausalLM> again = io::load_model(out);
    CHECK(again->hf_config_json() == model->hf_config_json());
    const auto a = model->named_parameters(), b = again->named_parameters();
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].first == b[i].first);
      CHECK(a[i].second.to_vector() == b[i].second.to_vector());
    }
  }
}

TEST_CASE("hf llama: unsupported or bad config.json keys are one error naming the key", "[io][llama]") {
  check_config_refused("rope_scaling.rope_type", [](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; });
  check_config_refused("num_local_experts", [](json& j) { j["num_local_experts"] = 8; });
  check_config_refused("hidden_act", [](json& j) { j["hidden_act"] = "gelu"; });
  check_config_refused("hidden_size", [](json& j) { j.erase("hidden_size"); });
  check_config_refused("num_key_value_heads", [](json& j) { j["num_key_value_heads"] = 3; });
  check_config_refused("rope_scaling.low_freq_factor", [](json& j) { j["rope_scaling"].erase("low_freq_factor"); });
  check_config_refused("sliding_window", [](json& j) {
    j["model_type"] = "mistral";
    j["sliding_window"] = 16;
  });
  check_config_refused("sliding_window", [](json& j) {
    j["model_type"] = "qwen3";
    j["use_sliding_window"] = true;
    j["sliding_window"] = 32;
  });
  // A window at least as long as the context changes nothing and is accepted.
  const fs::path dir = copy_fixture("mistral_mha_tied", "long_window");
  json j = read_json(dir / "config.json");
  j["sliding_window"] = 64;
  write_json(dir / "config.json", j);
  CHECK_NOTHROW(io::load_model(dir));
}

TEST_CASE("hf llama: unknown architecture, missing shard, wrong dtype, wrong shape", "[io][llama]") {
  {
    const fs::path dir = copy_fixture("llama_gqa_llama3", "unknown_arch");
    json j = read_json(dir / "config.json");
    j["model_type"] = "gemma";
    write_json(dir / "config.json", j);
    const std::string msg = load_error(dir);
    check_one_line(msg, "model_type");
    check_one_line(msg, "gemma");
  }
  {
    const fs::path dir = copy_fixture("qwen2_bias_tied", "missing_shard");
    fs::remove(dir / "model-00002-of-00002.safetensors");
    const std::string msg = load_error(dir);
    check_one_line(msg, "model.safetensors.index.json");
    check_one_line(msg, "model-00002-of-00002.safetensors");
  }
  {
    // An integer tensor where a weight belongs.
    const fs::path dir = copy_fixture("mistral_mha_tied", "wrong_dtype");
    io::SafetensorsFile st = io::read_safetensors(dir / "model.safetensors");
    io::NamedTensors tensors;
    for (const auto& [name, t] : st.tensors)
      tensors.emplace_back(name, name == "model.norm.weight"
                                     ? Tensor::from_vector(std::vector<int32_t>(t.numel(), 1), t.shape())
                                     : t);
    io::write_safetensors(dir / "model.safetensors", tensors);
    const std::string msg = load_error(dir);
    check_one_line(msg, "model.norm.weight");
    check_one_line(msg, "floating point");
  }
  {
    const fs::path dir = copy_fixture("mistral_mha_tied", "wrong_shape");
    json j = read_json(dir / "config.json");
    j["intermediate_size"] = 32;
    write_json(dir / "config.json", j);
    const std::string msg = load_error(dir);
    check_one_line(msg, "mlp.gate_proj.weight");
  }
  {
    const fs::path dir = copy_fixture("mistral_mha_tied", "no_model");
    fs::remove(dir / "model.safetensors");
    check_one_line(load_error(dir), "model.safetensors");
  }
}
