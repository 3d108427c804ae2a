// Hugging Face Llama-family directories (llama, qwen2, qwen3, mistral) -> nn::Llama. config.json is
// read key by key with every unsupported feature refused by name; the tensors come from
// model.safetensors or from the shards of model.safetensors.index.json, and every expected tensor
// is checked against the file before the model is built, so a hostile config cannot allocate what
// the files could never fill.
#include "io/hf_llama.h"
#include "io/safe_file.h"
#include "io/untrusted_json.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "lmforge/io/checkpoint.h"

namespace lmf::io {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

json read_json_object(const fs::path& path) {
  const std::string file = path.string();
  // config.json and the shard index are small; anything larger is not one of them.
  json j = io::parse_untrusted_json(io::read_regular_file(path, 64ull << 20), file);
  LMF_CHECK(j.is_object(), file, ": not a JSON object");
  return j;
}

// A config.json reader whose every error names the file and the key.
struct Keys {
  const json& j;
  std::string file;

  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  int64_t positive_int(const char* key) const {
    LMF_CHECK(j.contains(key), file, ": missing key \"", key, "\"");
    const json& v = j[key];
    LMF_CHECK(v.is_number_integer(), file, ": key \"", key, "\" must be an integer, got ", json_brief(v));
    const int64_t n = v.get<int64_t>();
    LMF_CHECK(n > 0, file, ": key \"", key, "\" must be positive, got ", n);
    // Far beyond any real model, and small enough that products of two dimensions fit in 64 bits.
    LMF_CHECK(n <= (int64_t{1} << 31), file, ": key \"", key, "\" is implausibly large: ", n);
    return n;
  }
  int64_t positive_int(const char* key, int64_t fallback) const { return has(key) ? positive_int(key) : fallback; }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    LMF_CHECK(j[key].is_number(), file, ": key \"", key, "\" must be a number, got ", json_brief(j[key]));
    return j[key].get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    LMF_CHECK(j[key].is_boolean(), file, ": key \"", key, "\" must be true or false, got ", json_brief(j[key]));
    return j[key].get<bool>();
  }
};

double scaling_number(const json& rs, const char* key, const std::string& file) {
  LMF_CHECK(rs.contains(key) && rs[key].is_number(), file, ": key \"rope_scaling.", key,
            "\" must be a number, got ", rs.contains(key) ? json_brief(rs[key]) : std::string("nothing"));
  return rs[key].get<double>();
}

nn::RopeScaling read_rope_scaling(const json& j, const std::string& file) {
  nn::RopeScaling out;
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return out;
  const json& rs = j["rope_scaling"];
  LMF_CHECK(rs.is_object(), file, ": key \"rope_scaling\" must be null or an object, got ", json_brief(rs));
  const char* type_key = rs.contains("rope_type") ? "rope_type" : "type";
  LMF_CHECK(rs.contains(type_key) && rs[type_key].is_string(), file,
            ": key \"rope_scaling.rope_type\" is missing or not a string");
  const std::string type = rs[type_key].get<std::string>();
  if (type == "default") return out;
  if (type == "linear") {
    out.type = nn::RopeScalingType::linear;
    out.factor = scaling_number(rs, "factor", file);
  } else if (type == "llama3") {
    out.type = nn::RopeScalingType::llama3;
    out.factor = scaling_number(rs, "factor", file);
    out.low_freq_factor = scaling_number(rs, "low_freq_factor", file);
    out.high_freq_factor = scaling_number(rs, "high_freq_factor", file);
    const double original = scaling_number(rs, "original_max_position_embeddings", file);
    LMF_CHECK(original >= 1 && original <= double(int64_t{1} << 31) && original == double(int64_t(original)), file,
              ": key \"rope_scaling.original_max_position_embeddings\" must be a positive integer");
    out.original_max_position_embeddings = static_cast<int64_t>(original);
  } else {
    throw Error(str(file, ": key \"rope_scaling.", type_key, "\" is \"", type,
                    "\"; only \"default\", \"linear\" and \"llama3\" rotary scaling are supported"));
  }
  return out;
}

// Every parameter the config implies, with its shape, in the model's registration order.
std::vector<std::pair<std::string, Shape>> parameter_shapes(const nn::LlamaConfig& c) {
  const int64_t C = c.hidden_size, HS = c.head_size(), NH = c.num_attention_heads, NKV = c.kv_heads();
  const int64_t I = c.intermediate_size;
  std::vector<std::pair<std::string, Shape>> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, C}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {C}});
    const std::pair<const char*, int64_t> projections[] = {{"q_proj", NH * HS}, {"k_proj", NKV * HS}, {"v_proj", NKV * HS}};
    for (const auto& [name, rows] : projections) {
      out.push_back({p + "self_attn." + name + ".weight", {rows, C}});
      if (c.qkv_bias) out.push_back({p + "self_attn." + name + ".bias", {rows}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {C, NH * HS}});
    if (c.o_bias) out.push_back({p + "self_attn.o_proj.bias", {C}});
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {HS}});
      out.push_back({p + "self_attn.k_norm.weight", {HS}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {C}});
    out.push_back({p + "mlp.gate_proj.weight", {I, C}});
    out.push_back({p + "mlp.up_proj.weight", {I, C}});
    out.push_back({p + "mlp.down_proj.weight", {C, I}});
  }
  out.push_back({"model.norm.weight", {C}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, C}});
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

nn::LlamaConfig read_llama_config(const fs::path& path) {
  const std::string file = path.string();
  const json j = read_json_object(path);
  const Keys k{j, file};
  LMF_CHECK(j.contains("model_type") && j["model_type"].is_string(), file, ": key \"model_type\" is missing");
  const std::string type = j["model_type"].get<std::string>();
  LMF_CHECK(type == "llama" || type == "qwen2" || type == "qwen3" || type == "mistral", file, ": key \"model_type\" is \"",
            type, "\", not a Llama-style model (llama, qwen2, qwen3, mistral)");

  // Refused features first, each by its key.
  for (const char* moe : {"num_experts", "num_local_experts", "num_experts_per_tok", "moe_intermediate_size",
                          "n_routed_experts", "n_shared_experts"}) {
    LMF_CHECK(!k.has(moe) || (j[moe].is_number() && j[moe].get<double>() == 0), file, ": key \"", moe,
              "\" is ", j.contains(moe) ? json_brief(j[moe]) : "", "; mixture-of-experts models are not supported");
  }
  if (k.has("hidden_act"))
    LMF_CHECK(j["hidden_act"] == "silu", file, ": key \"hidden_act\" is ", json_brief(j["hidden_act"]),
              "; only \"silu\" (SwiGLU) is supported");
  LMF_CHECK(!k.boolean("mlp_bias", false), file, ": key \"mlp_bias\" is true; MLP biases are not supported");
  LMF_CHECK(k.number("attention_dropout", 0.0) == 0.0, file, ": key \"attention_dropout\" is ",
            j.contains("attention_dropout") ? json_brief(j["attention_dropout"]) : "", "; only 0 is supported");

  nn::LlamaConfig c;
  c.model_type = type;
  c.vocab_size = k.positive_int("vocab_size");
  c.hidden_size = k.positive_int("hidden_size");
  c.intermediate_size = k.positive_int("intermediate_size");
  c.num_hidden_layers = k.positive_int("num_hidden_layers");
  c.num_attention_heads = k.positive_int("num_attention_heads");
  c.num_key_value_heads = k.positive_int("num_key_value_heads", c.num_attention_heads);
  c.head_dim = k.positive_int("head_dim", 0);
  c.max_position_embeddings = k.positive_int("max_position_embeddings");
  c.rms_norm_eps = k.number("rms_norm_eps", 1e-6);
  c.rope_theta = k.number("rope_theta", 10000.0);
  c.rope_scaling = read_rope_scaling(j, file);
  c.tie_word_embeddings = k.boolean("tie_word_embeddings", false);
  c.initializer_range = static_cast<float>(k.number("initializer_range", 0.02));
  // Token ids for generation: kept so that a written directory stops where the original does.
  const auto token_id = [&](const char* key, const json& v) {
    LMF_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX, file, ": key \"", key,
              "\" must be a token id (an integer >= 0), got ", v.dump());
    return v.get<int64_t>();
  };
  if (k.has("bos_token_id")) c.bos_token_id = token_id("bos_token_id", j["bos_token_id"]);
  if (k.has("eos_token_id")) {
    const json& eos = j["eos_token_id"];
    if (eos.is_array()) {
      LMF_CHECK(eos.size() <= 64, file, ": key \"eos_token_id\" lists ", eos.size(), " ids");
      for (const json& id : eos) c.eos_token_ids.push_back(token_id("eos_token_id", id));
    } else {
      c.eos_token_ids.push_back(token_id("eos_token_id", eos));
    }
  }
  if (type == "qwen2") {
    c.qkv_bias = true;  // Qwen2's q/k/v projections always have biases, o_proj never
  } else if (type != "mistral") {
    c.qkv_bias = c.o_bias = k.boolean("attention_bias", false);
  }
  c.qk_norm = type == "qwen3";

  // A sliding window shorter than the context changes the function; one at least as long does not.
  const bool window_on = type == "mistral" || k.boolean("use_sliding_window", false);
  if (window_on && k.has("sliding_window")) {
    const int64_t window = k.positive_int("sliding_window");
    LMF_CHECK(window >= c.max_position_embeddings, file, ": key \"sliding_window\" is ", window,
              ", shorter than max_position_embeddings (", c.max_position_embeddings,
              "); sliding-window attention is not supported");
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(str(file, ": ", e.what()));
  }
  return c;
}

namespace {

// The names and shapes a file of `config`'s model may hold, built once `tensor_count` (the file's
// or the index's) has bounded the layer count: a hostile num_hidden_layers never sizes a table.
class ExpectedTensors {
 public:
  ExpectedTensors(const nn::LlamaConfig& config, std::string where) : config_(config), where_(std::move(where)) {}

  void bound_by(std::size_t tensor_count) {
    if (!shapes_.empty()) return;
    LMF_CHECK(config_.num_hidden_layers * 9 <= static_cast<int64_t>(tensor_count), where_, ": holds ", tensor_count,
              " tensors, fewer than ", kConfigFile, " (num_hidden_layers=", config_.num_hidden_layers, ") implies");
    order_ = parameter_shapes(config_);
    // A tied head may still be stored (checked equal to the embedding later).
    if (config_.tie_word_embeddings) order_.emplace_back("lm_head.weight", order_.front().second);
    shapes_.insert(order_.begin(), order_.end());
  }

  // Refuses, from the header alone, a tensor the config does not imply or a shape it does not
  // give, so a small sparse file declaring a huge extra tensor is never read into memory.
  void check(const std::string& file, const std::vector<std::pair<std::string, Shape>>& entries) const {
    std::map<std::string, Shape> in_file(entries.begin(), entries.end());
    // Shapes in the model's order (the first layer's first wrong tensor is named), then strangers.
    for (const auto& [name, shape] : order_) {
      auto it = in_file.find(name);
      LMF_CHECK(it == in_file.end() || it->second == shape, file, ": tensor \"", name, "\" has shape ",
                clip(shape_str(it->second)), " but ", kConfigFile, " implies ", shape_str(shape));
    }
    for (const auto& [name, shape] : entries) {
      if (ends_with(name, "rotary_emb.inv_freq")) {  // recomputed from the config; (HS / 2) when stored
        LMF_CHECK(shape.size() == 1 && shape[0] <= config_.head_size(), file, ": tensor \"", clip(name),
                  "\" has shape ", clip(shape_str(shape)), ", not a rotary frequency table");
        continue;
      }
      LMF_CHECK(shapes_.count(name), file, ": unexpected tensor \"", clip(name), "\" for a ", config_.model_type,
                " model (", kConfigFile, ")");
    }
  }

 private:
  const nn::LlamaConfig& config_;
  std::string where_;
  std::vector<std::pair<std::string, Shape>> order_;
  std::map<std::string, Shape> shapes_;
};

}  // namespace

std::map<std::string, Tensor> read_model_tensors(const fs::path& dir, const nn::LlamaConfig& config) {
  std::map<std::string, Tensor> out;
  const fs::path single = dir / kModelFile, index = dir / kModelIndexFile;
  if (fs::exists(single)) {
    ExpectedTensors expected(config, single.string());
    SafetensorsFile st = read_safetensors(single, [&](const auto& entries) {
      expected.bound_by(entries.size());
      expected.check(single.string(), entries);
    });
    for (auto& [name, t] : st.tensors) out.emplace(name, std::move(t));
    return out;
  }
  const std::string file = index.string();
  LMF_CHECK(fs::exists(index), single.string(), ": missing (and no ", kModelIndexFile, " of shards either)");
  const json j = read_json_object(index);
  LMF_CHECK(j.contains("weight_map") && j["weight_map"].is_object(), file, ": key \"weight_map\" is missing or not an object");
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [name, shard] : j["weight_map"].items()) {
    LMF_CHECK(shard.is_string(), file, ": weight_map[\"", name, "\"] is not a file name");
    const std::string s = shard.get<std::string>();
    // Shards are files beside the index, never paths elsewhere.
    LMF_CHECK(!s.empty() && s.find('/') == std::string::npos && s != "." && s != "..", file, ": weight_map[\"", name,
              "\"] names \"", s, "\", not a file in the same directory");
    by_shard[s].push_back(name);
  }
  ExpectedTensors expected(config, file);
  expected.bound_by(j["weight_map"].size());
  for (const auto& [shard, names] : by_shard) {
    const fs::path path = dir / shard;
    LMF_CHECK(fs::exists(path), file, ": shard \"", shard, "\" (holding \"", names.front(), "\") is missing");
    SafetensorsFile st = read_safetensors(path, [&](const auto& entries) { expected.check(path.string(), entries); });
    for (const std::string& name : names) {
      auto it = st.tensors.find(name);
      LMF_CHECK(it != st.tensors.end(), path.string(), ": missing tensor \"", name, "\" that ", kModelIndexFile,
                " places in it");
      out.emplace(name, std::move(it->second));
    }
  }
  return out;
}

std::unique_ptr<nn::Llama> load_llama(const fs::path& dir, uint64_t seed) {
  const nn::LlamaConfig config = read_llama_config(dir / kConfigFile);
  std::map<std::string, Tensor> tensors = read_model_tensors(dir, config);
  const std::string where = (dir / (fs::exists(dir / kModelFile) ? kModelFile : kModelIndexFile)).string();
  // Bound the layer count by the files before building per-layer tables from it.
  LMF_CHECK(config.num_hidden_layers * 9 <= static_cast<int64_t>(tensors.size()), where, ": holds ", tensors.size(),
            " tensors, fewer than ", kConfigFile, " (num_hidden_layers=", config.num_hidden_layers, ") implies");
  nn::StateDict state;
  std::set<std::string> used;
  for (const auto& [name, shape] : parameter_shapes(config)) {
    auto it = tensors.find(name);
    LMF_CHECK(it != tensors.end(), where, ": missing tensor \"", name, "\"");
    LMF_CHECK(it->second.dtype() == DType::f32, where, ": tensor \"", name, "\" must be floating point (F32, BF16 or F16), not ",
              dtype_name(it->second.dtype()));
    LMF_CHECK(it->second.shape() == shape, where, ": tensor \"", name, "\" has shape ", shape_str(it->second.shape()),
              " but ", kConfigFile, " implies ", shape_str(shape));
    used.insert(name);
    state.emplace_back(name, it->second);
  }
  for (const auto& [name, t] : tensors) {
    if (used.count(name) || ends_with(name, "rotary_emb.inv_freq")) continue;  // recomputed from the config
    if (name == "lm_head.weight" && config.tie_word_embeddings) {
      // Some exporters store the tied head; it must be the embedding, or the model is not tied.
      const Tensor& embed = tensors.at("model.embed_tokens.weight");
      LMF_CHECK(t.shape() == embed.shape() && t.to_vector() == embed.to_vector(), where,
                ": tensor \"lm_head.weight\" differs from model.embed_tokens.weight but ", kConfigFile,
                " says \"tie_word_embeddings\": true");
      continue;
    }
    throw Error(str(where, ": unexpected tensor \"", name, "\" for a ", config.model_type, " model"));
  }
  tensors.clear();
  auto model = std::make_unique<nn::Llama>(config, seed);
  model->load_state_dict(state, /*strict=*/true);
  return model;
}

}  // namespace lmf::io
