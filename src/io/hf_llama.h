// Loading Hugging Face Llama-family directories (internal to io/): the architecture table in
// checkpoint.cpp points its llama, qwen2, qwen3 and mistral entries here.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "lmforge/core/tensor.h"
#include "lmforge/nn/llama.h"

namespace lmf::io {

/// Every tensor of the directory's model.safetensors, or of the shards its
/// model.safetensors.index.json lists (a missing shard is an error naming it), as f32 CPU tensors.
/// Each file's header is checked against the names and shapes `config` implies before any tensor
/// data is read.
std::map<std::string, Tensor> read_model_tensors(const std::filesystem::path& dir, const nn::LlamaConfig& config);
/// A Llama-family directory as an nn::Llama on the CPU; every tensor checked against config.json.
std::unique_ptr<nn::Llama> load_llama(const std::filesystem::path& dir, uint64_t seed);

}  // namespace lmf::io
