// LoRA adapter files next to a plain model.safetensors: the base stays loadable by any reader of
// its architecture, and the adapters (adapters.safetensors + adapter_config.json) travel beside it. Both
// files are untrusted: the config is validated and every tensor shape checked before any adapter
// memory is allocated.
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "io/safe_file.h"
#include "io/untrusted_json.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/linear.h"
#include "lmforge/nn/lora.h"

namespace lmf::io {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string lora_name(const nn::CausalLM& model, int64_t layer, const std::string& target, const char* which) {
  return model.layer_prefix(layer) + "." + target + "." + which;
}

nn::LoraOptions read_adapter_config(const fs::path& path, const nn::CausalLM& model) {
  const std::string file = path.string();
  const json j = parse_untrusted_json(read_regular_file(path, 1 << 20), file);
  LMF_CHECK(j.is_object(), file, ": not a JSON object");
  for (const char* key : {"rank", "alpha", "dropout", "targets"})
    LMF_CHECK(j.contains(key), file, ": missing key \"", key, "\"");
  LMF_CHECK(j["rank"].is_number_integer(), file, ": key \"rank\" must be an integer");
  LMF_CHECK(j["alpha"].is_number() && j["dropout"].is_number(), file,
            ": keys \"alpha\" and \"dropout\" must be numbers");
  LMF_CHECK(j["targets"].is_array(), file, ": key \"targets\" must be a list of layer names");
  nn::LoraOptions options;
  options.rank = j["rank"].get<int64_t>();
  options.alpha = j["alpha"].get<float>();
  options.dropout = j["dropout"].get<float>();
  options.targets.clear();
  for (const json& t : j["targets"]) {
    LMF_CHECK(t.is_string(), file, ": key \"targets\" holds ", json_brief(t), ", not a layer name");
    options.targets.push_back(t.get<std::string>());
  }
  try {
    options.validate(model);
  } catch (const Error& e) {
    throw Error(str(file, ": ", e.what()));
  }
  return options;
}

}  // namespace

void write_adapter_files(const nn::CausalLM& gpt, const fs::path& dir) {
  const std::optional<nn::LoraOptions> options = nn::lora_options(gpt);
  LMF_CHECK(options, "write_adapter_files: the model has no LoRA adapters");
  NamedTensors tensors;
  for (int64_t i = 0; i < gpt.num_layers(); ++i) {
    for (const auto& target : options->targets) {
      const nn::LoraAdapter* adapter = nn::lora_target(gpt, i, target).lora();
      LMF_CHECK(adapter, "write_adapter_files: layer ", i, " has no adapter on ", target,
                " although other blocks do");
      tensors.emplace_back(lora_name(gpt, i, target, "lora_A"), adapter->A);
      tensors.emplace_back(lora_name(gpt, i, target, "lora_B"), adapter->B);
    }
  }
  write_safetensors(dir / kAdapterFile, tensors, {{"format", "lmforge-lora"}});
  const json config = {{"rank", options->rank},
                       {"alpha", options->alpha},
                       {"dropout", options->dropout},
                       {"targets", options->targets}};
  write_file_atomic(dir / kAdapterConfigFile, config.dump(2) + "\n");
}

bool has_adapter_files(const fs::path& dir) {
  return fs::exists(dir / kAdapterFile) || fs::exists(dir / kAdapterConfigFile);
}

void load_adapters(nn::CausalLM& gpt, const fs::path& dir) {
  for (const char* name : {kAdapterFile, kAdapterConfigFile})
    LMF_CHECK(fs::exists(dir / name), (dir / name).string(),
              ": missing (a checkpoint with LoRA "
              "adapters needs both ",
              kAdapterFile, " and ", kAdapterConfigFile, ")");
  nn::LoraOptions options = read_adapter_config(dir / kAdapterConfigFile, gpt);
  const std::string file = (dir / kAdapterFile).string();
  // Every expected tensor with its shape, checked against the file's header before add_lora
  // allocates rank-sized adapters or any tensor data is read: a hostile rank or a sparse file
  // cannot ask for more memory than a real adapter file needs.
  std::map<std::string, Shape> expected;
  for (int64_t i = 0; i < gpt.num_layers(); ++i) {
    for (const auto& target : options.targets) {
      const nn::Linear& layer = nn::lora_target(gpt, i, target);
      expected[lora_name(gpt, i, target, "lora_A")] = {options.rank, layer.in_features()};
      expected[lora_name(gpt, i, target, "lora_B")] = {layer.out_features(), options.rank};
    }
  }
  SafetensorsFile st = read_safetensors(dir / kAdapterFile, [&](const auto& entries) {
    for (const auto& [name, shape] : entries) {
      auto it = expected.find(name);
      LMF_CHECK(it != expected.end(), file, ": unexpected tensor \"", clip(name),
                "\" for targets of ", kAdapterConfigFile);
      LMF_CHECK(it->second == shape, file, ": tensor \"", name, "\" has shape ",
                clip(shape_str(shape)), " but ", kAdapterConfigFile, " and the model imply ",
                shape_str(it->second));
    }
  });

  nn::StateDict state;
  for (const auto& [name, shape] : expected) {
    auto it = st.tensors.find(name);
    LMF_CHECK(it != st.tensors.end(), file, ": missing tensor \"", name, "\" (", kAdapterConfigFile,
              " lists ", options.targets.size(), " targets of rank ", options.rank, ")");
    LMF_CHECK(it->second.dtype() == DType::f32, file, ": tensor \"", name,
              "\" must be floating point, not ", dtype_name(it->second.dtype()));
    LMF_CHECK(it->second.shape() == shape, file, ": tensor \"", name, "\" has shape ",
              shape_str(it->second.shape()), " but ", kAdapterConfigFile, " and the model imply ",
              shape_str(shape));
    state.emplace_back(name, it->second);
  }
  for (const auto& [name, t] : st.tensors)
    LMF_CHECK(expected.count(name), file, ": unexpected tensor \"", name, "\" for targets of ",
              kAdapterConfigFile);
  options.seed = 0;  // A's initial draw is overwritten by the file's values
  nn::add_lora(gpt, options);
  gpt.load_state_dict(state, /*strict=*/false);
}

}  // namespace lmf::io
