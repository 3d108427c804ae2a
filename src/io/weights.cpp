// Weights of a checkpoint directory into a model that already exists, whatever its kind: the model
// names its tensors (CausalLM::checkpoint_name), so resuming a caller-built model needs no loader
// for its architecture.
#include <algorithm>
#include <optional>

#include "io/safe_file.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"
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

// The tensors a file should hold with the shapes stored there, from the model's own parameters:
// the header is checked against them before any data is read. Tensors the model does not use
// (a bias-free GPT-2's zero biases) are allowed up to the model's own size in total, so a small
// sparse file that declares a huge extra tensor is refused instead of read into memory.
HeaderCheck expect_parameters(const nn::CausalLM& model, bool adapters, const std::string& path) {
  std::map<std::string, Shape> expected;
  int64_t total = 0;
  for (const auto& [name, param] : model.named_parameters()) {
    if (is_adapter(name) != adapters) continue;
    const nn::CheckpointName stored = adapters ? nn::CheckpointName{name, false} : model.checkpoint_name(name);
    Shape shape = param.shape();
    if (stored.transposed && shape.size() == 2) std::swap(shape[0], shape[1]);
    expected.emplace(stored.name, shape);
    total += param.numel();
  }
  return [expected = std::move(expected), total, path](const std::vector<std::pair<std::string, Shape>>& entries) {
    int64_t unused = 0;
    for (const auto& [name, shape] : entries) {
      const auto it = expected.find(name);
      if (it != expected.end()) {
        LMF_CHECK(it->second == shape, path, ": tensor '", clip(name), "' has shape ", clip(shape_str(shape)),
                  ", the model's parameter has ", shape_str(it->second));
        continue;
      }
      int64_t numel = 1;  // saturating just above the model's size (dims are non-negative here)
      for (int64_t d : shape) numel = d != 0 && numel > (total + 1) / d ? total + 1 : numel * d;
      unused = std::min(unused + numel, total + 1);
      LMF_CHECK(unused <= total, path, ": tensor '", clip(name), "' (shape ", clip(shape_str(shape)),
                ") is not a parameter of the model, and the tensors it does not use are larger than the model");
    }
  };
}

}  // namespace

void load_weights(nn::CausalLM& model, const fs::path& dir) {
  const fs::path model_file = dir / kModelFile, adapter_file = dir / kAdapterFile;
  const SafetensorsFile weights = read_safetensors(model_file, expect_parameters(model, false, model_file.string()));
  std::optional<SafetensorsFile> adapters;
  nn::StateDict state;
  for (const auto& [name, param] : model.named_parameters()) {
    const bool adapter = is_adapter(name);
    if (adapter && !adapters)
      adapters = read_safetensors(adapter_file, expect_parameters(model, true, adapter_file.string()));
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
