// GGUF export: a GPT-2 or Llama-family model and its tokenizer as one GGUF v3 file in the layout
// llama.cpp's own converter (convert_hf_to_gguf.py) writes, so llama.cpp, Ollama and LM Studio can
// run what lmforge trained. docs/formats.md lists the keys, the tensor map and what is refused.
#pragma once
#include <filesystem>
#include <string>

#include "lmforge/nn/causal_lm.h"

namespace lmf::io {

/// Element type of the exported 2-D weights (general.file_type). 1-D tensors, norms, biases,
/// GPT-2's position table and rope_freqs stay f32; q8_0 falls back to f16 for a weight whose rows
/// are not a multiple of 32 values (both as llama.cpp's converter does).
enum class GgufDType { f32, f16, bf16, q8_0 };

/// "f32", "f16", "bf16" or "q8_0"; anything else throws lmf::Error naming the accepted values.
GgufDType parse_gguf_dtype(const std::string& name);

struct GgufOptions {
  GgufDType dtype = GgufDType::f16;
  /// general.name; empty: the output file name without its extension.
  std::string name;
};

/// Writes `model` with the tokenizer `tokenizer` (a tokenizer spec as load_tokenizer takes it:
/// lmforge's tokenizer.json, a Hugging Face tokenizer.json or its directory) to `output` through
/// an AtomicFile (the file appears whole or not at all). Supported: nn::GPT (architecture gpt2),
/// nn::Llama of model_type llama and mistral (llama), qwen2 and qwen3; byte-level BPE tokenizers
/// (GPT-2's, lmforge's own, Llama 3's, Qwen2/3's: tokenizer model "gpt2") and SentencePiece-style
/// BPE tokenizer.json files with <0xNN> byte pieces (Llama 2, Mistral: model "llama", scores from
/// the merge ranks). Refused with an lmf::Error naming the reason: other models, a model with LoRA
/// adapters (merge them first), character tokenizers, a byte-level pre-tokenizer llama.cpp has no
/// name for, a SentencePiece-style vocabulary without byte pieces, a tokenizer larger than the
/// model's vocabulary, and rotary scaling llama.cpp cannot express for the architecture.
void write_gguf(const nn::CausalLM& model, const std::string& tokenizer, const std::filesystem::path& output,
                const GgufOptions& options = {});

}  // namespace lmf::io
