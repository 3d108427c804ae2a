// Weights of a checkpoint directory into a model that already exists, whatever its kind: the model
// names its tensors (CausalLM::checkpoint_name), so resuming a caller-built model needs no loader
// for its architecture.
#include <optional>

#include "lmforge/io/checkpoint.h"
#include "lmforge/ops.h"

namespace lmf::io {

namespace fs = std::filesystem;

namespace {
bool is_adapter(const std::string& name) {
  const auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends(".lora_A") || ends(".lora_B");
}
}  // namespace

void load_weights(nn::CausalLM& model, const fs::path& dir) {
  const fs::path model_file = dir / kModelFile, adapter_file = dir / kAdapterFile;
  const SafetensorsFile weights = read_safetensors(model_file);
  std::optional<SafetensorsFile> adapters;
  nn::StateDict state;
  for (const auto& [name, param] : model.named_parameters()) {
    const bool adapter = is_adapter(name);
    if (adapter && !adapters) adapters = read_safetensors(adapter_file);
    const nn::CheckpointName stored = adapter ? nn::CheckpointName{name, false} : model.checkpoint_name(name);
    const SafetensorsFile& file = adapter ? *adapters : weights;
    const std::string path = (adapter ? adapter_file : model_file).string();
    const auto it = file.tensors.find(stored.name);
    LMF_CHECK(it != file.tensors.end(), path, ": no tensor '", stored.name, "' for the model's parameter '", name, "'");
    Tensor value = it->second;
    if (stored.transposed) {
      LMF_CHECK(value.dim() == 2, path, ": tensor '", stored.name, "' has shape ", shape_str(value.shape()),
                ", expected a matrix (stored transposed)");
      value = transpose(value, 0, 1).contiguous_copy();
    }
    LMF_CHECK(value.shape() == param.shape(), path, ": tensor '", stored.name, "' has shape ",
              shape_str(value.shape()), ", the model's parameter '", name, "' has ", shape_str(param.shape()));
    state.emplace_back(name, value);
  }
  model.load_state_dict(state);
}

}  // namespace lmf::io
