// The trainer's only contact with concrete model classes: building the model a config describes,
// loading and writing checkpoint model files, and LoRA. Everything else in train/ sees an
// nn::CausalLM. model.arch chooses nn::GPT or nn::Llama for a scratch model; directories go
// through io::load_model / io::write_model_files, whose table of architectures knows the rest.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "lmforge/nn/causal_lm.h"
#include "lmforge/train/config.h"

namespace lmf::train::detail {

/// The model in checkpoint (or Hugging Face) directory `dir`, on the CPU.
std::unique_ptr<nn::CausalLM> load_model(const std::filesystem::path& dir, uint64_t seed = 0);
/// A freshly initialised model of `m` with `vocab_size` rows (model.init: scratch).
std::unique_ptr<nn::CausalLM> build_model(const ModelConfig& m, int64_t vocab_size, uint64_t seed);
/// model.safetensors + config.json (+ LoRA adapter files) of `model` into the existing `dir`.
void write_model(const nn::CausalLM& model, const std::filesystem::path& dir);
/// Loads the weights of checkpoint `dir` into `model` (io::load_weights), for resuming. A GPT-2
/// checkpoint of a different shape than `model` is refused first by its config.json, naming both.
void load_weights(nn::CausalLM& model, const std::filesystem::path& dir);

bool has_lora(const nn::CausalLM& model);
void merge_lora(nn::CausalLM& model);
void add_lora(nn::CausalLM& model, const LoraConfig& lora, uint64_t seed);

}  // namespace lmf::train::detail
