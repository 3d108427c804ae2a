// Checkpoints of any CausalLM as Hugging Face directories: model.safetensors (the architecture's
// tensor names and layouts; GPT-2's Conv1D weights stored (IN, OUT)) and config.json, so
// GPT2LMHeadModel.from_pretrained(dir) loads ours and load_model / load_gpt load theirs.
// Directories are written under a temporary name and renamed into place so
// a crash never leaves a half-written checkpoint where a complete one is expected.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "lmforge/io/safetensors.h"
#include "lmforge/nn/causal_lm.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/llama.h"

namespace lmf::io {

/// A directory written under a temporary name next to its target (`target.tmp-XXXXXX`) and
/// renamed into place by commit(). Writers put any number of files into path() first (the model,
/// then the trainer's optimizer.safetensors and trainer_state.json). commit() fsyncs every file
/// and the directory, then swaps it with an existing target atomically where the filesystem
/// allows (renameat2 RENAME_EXCHANGE), otherwise moves the old target aside first; the old
/// directory is deleted only after the new one is in place. Without commit() the destructor
/// removes the temporary directory.
class AtomicDir {
 public:
  explicit AtomicDir(std::filesystem::path target);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  /// The temporary directory to write into.
  const std::filesystem::path& path() const { return tmp_; }
  const std::filesystem::path& target() const { return target_; }
  /// Makes the written directory appear at target(); throws lmf::Error naming it on failure.
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path tmp_;
  bool committed_ = false;
};

/// Names of the files of a checkpoint directory.
inline constexpr const char* kModelFile = "model.safetensors";
inline constexpr const char* kConfigFile = "config.json";
/// The index of a sharded model ({"weight_map": {tensor: shard file}}), read when kModelFile is absent.
inline constexpr const char* kModelIndexFile = "model.safetensors.index.json";
/// LoRA adapters of a checkpoint (docs/formats.md): their tensors and the options that built them.
inline constexpr const char* kAdapterFile = "adapters.safetensors";
inline constexpr const char* kAdapterConfigFile = "adapter_config.json";

/// config.json text for `config` in Hugging Face GPT-2 form (model_type "gpt2",
/// GPT2LMHeadModel, n_layer/n_head/n_embd/n_positions/n_ctx/vocab_size, layer_norm_epsilon 1e-5,
/// activation_function "gelu_new", resid/embd/attn_pdrop = dropout, tie_word_embeddings true).
/// A model without biases adds "bias": false (Hugging Face ignores the key; see save_gpt).
std::string gpt_config_json(const nn::GPTConfig& config);

/// Parses a Hugging Face GPT-2 config.json. Required: n_layer, n_head, n_embd, vocab_size and
/// n_positions (or n_ctx). Optional: resid_pdrop (dropout, default 0), bias (default true),
/// layer_norm_epsilon (must be 1e-5), activation_function (must be a tanh GELU), n_inner (must
/// be null or 4·n_embd), model_type (must be "gpt2"). Errors name the file and the key.
nn::GPTConfig read_gpt_config(const std::filesystem::path& config_json);

/// Parses the config.json of a Hugging Face Llama-family model (model_type llama, qwen2, qwen3 or
/// mistral; docs/models.md lists the keys). Required: vocab_size, hidden_size, intermediate_size,
/// num_hidden_layers, num_attention_heads, max_position_embeddings. Refused, each with an error
/// naming the file and the key: rope_scaling types other than default/linear/llama3, MoE keys,
/// hidden_act other than silu, mlp_bias, attention_dropout > 0, and a sliding window (mistral, or
/// qwen2/3 with use_sliding_window) shorter than max_position_embeddings.
nn::LlamaConfig read_llama_config(const std::filesystem::path& config_json);

/// Writes model.safetensors and config.json (model.hf_config_json()) into the existing directory
/// `dir` (for example an AtomicDir's path()), in the format of the model's architecture. GPT-2:
/// tensor names are Hugging Face's without the "transformer." prefix (as on the Hub); Conv1D
/// weights (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are transposed to (IN, OUT).
/// lm_head.weight is omitted: it is tied to wte.weight, and Hugging Face re-ties it on load. A
/// model without biases writes zero biases, which Hugging Face's layers require and which compute
/// the same function. An architecture without an entry in the table of architectures (a model of
/// one's own) writes every parameter under model.checkpoint_name(). A model with LoRA adapters
/// writes its base weights there (still a plain model) and the adapters with write_adapter_files.
void write_model_files(const nn::CausalLM& model, const std::filesystem::path& dir);
/// Writes adapters.safetensors ("<layer_prefix(i)>.<target>.lora_A" (r, IN), ".lora_B" (OUT, r);
/// "h.{i}...." for GPT-2) and adapter_config.json ({"rank", "alpha", "dropout", "targets"}) into
/// `dir`. The model must have adapters.
void write_adapter_files(const nn::CausalLM& model, const std::filesystem::path& dir);
/// Whether `dir` holds adapter files (either of the two counts, so a half-copied pair is an error
/// on load rather than a silently unadapted model).
bool has_adapter_files(const std::filesystem::path& dir);

/// Attaches the adapters described in `dir` to `model` (nn::add_lora: base frozen, slabs rebuilt)
/// and loads their values. Every tensor's presence and shape is checked against
/// adapter_config.json and the model before anything is allocated; errors name the file and key.
void load_adapters(nn::CausalLM& model, const std::filesystem::path& dir);

/// Writes a complete checkpoint directory at `dir` atomically (AtomicDir + write_model_files).
void save(const nn::CausalLM& model, const std::filesystem::path& dir);
void save_gpt(const nn::GPT& gpt, const std::filesystem::path& dir);

/// Loads a checkpoint directory of any architecture in the table of architectures, chosen by
/// config.json's "model_type" (absent: "gpt2"): gpt2 (nn::GPT), llama, qwen2, qwen3 and mistral
/// (nn::Llama; model.safetensors or the shards of model.safetensors.index.json, F32/BF16/F16
/// tensors converted to f32); an unknown model_type is an error naming the file,
/// the key and the supported types. Adapter files beside it are re-attached (load_adapters).
/// The model is returned on the CPU.
std::unique_ptr<nn::CausalLM> load_model(const std::filesystem::path& dir, uint64_t seed = 0);

/// Loads the weights of the checkpoint directory `dir` into an existing model of any kind (one built
/// by the caller, such as a researcher's own CausalLM): each parameter is read from
/// model.safetensors under model.checkpoint_name(name) (transposed back where it says so) and, for
/// LoRA adapters, from adapters.safetensors under its own name. A missing tensor or a shape that
/// differs from the parameter's is an error naming the file, the tensor and both shapes; tensors the
/// model does not use are ignored. Values are copied into the existing parameters (slab views stay).
void load_weights(nn::CausalLM& model, const std::filesystem::path& dir);

/// Loads a GPT-2 checkpoint directory written by save_gpt or by Hugging Face (GPT2LMHeadModel or
/// GPT2Model). Accepts tensor names with or without the "transformer." prefix; ignores the
/// attn.bias / attn.masked_bias buffers; accepts an absent lm_head.weight, and a present one only
/// when it equals wte.weight (an untied head cannot be represented, so it is an error rather than
/// silently dropped). Every tensor's shape is checked against config.json; missing and unknown
/// tensors are errors naming the file and the tensor. The model is returned on the CPU. When the
/// directory also holds adapter files, the adapters are re-attached (load_adapters), so resuming,
/// evaluating and generating see the adapted model; nn::merge_lora turns it into a plain one.
std::unique_ptr<nn::GPT> load_gpt(const std::filesystem::path& dir, uint64_t seed = 0);

}  // namespace lmf::io
