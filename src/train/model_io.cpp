// The trainer's model seam (see model_io.h): model.arch picks the class built from scratch;
// directories of any architecture load through io::load_model and write through
// io::write_model_files; LoRA works on any CausalLM.
#include "train/model_io.h"

#include <algorithm>

#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/llama.h"
#include "lmforge/nn/lora.h"

namespace lmf::train::detail {
std::unique_ptr<nn::CausalLM> load_model(const std::filesystem::path& dir, uint64_t seed) {
  return io::load_model(dir, seed);
}

std::unique_ptr<nn::CausalLM> build_model(const ModelConfig& m, int64_t vocab_size, uint64_t seed) {
  if (m.arch == ModelArch::llama) {
    nn::LlamaConfig lc;
    lc.vocab_size = vocab_size;
    lc.hidden_size = m.n_embd;
    lc.intermediate_size = m.intermediate_size > 0 ? m.intermediate_size : (8 * m.n_embd / 3 + 31) / 32 * 32;
    lc.num_hidden_layers = m.n_layer;
    lc.num_attention_heads = m.n_head;
    lc.num_key_value_heads = m.n_kv_head;
    lc.head_dim = m.head_dim;
    lc.max_position_embeddings = m.block_size;
    lc.rms_norm_eps = m.rms_norm_eps;
    lc.rope_theta = m.rope_theta;
    lc.tie_word_embeddings = m.tie_embeddings;
    lc.qkv_bias = m.qkv_bias;
    lc.qk_norm = m.qk_norm;
    lc.o_bias = m.qkv_bias && m.qk_norm;  // Qwen3's attention_bias covers o_proj too
    try {
      return std::make_unique<nn::Llama>(lc, seed);
    } catch (const Error& e) {
      throw Error(str("model: ", e.what()));
    }
  }
  nn::GPTConfig gc;
  gc.n_layer = m.n_layer;
  gc.n_head = m.n_head;
  gc.n_embd = m.n_embd;
  gc.block_size = m.block_size;
  gc.dropout = m.dropout;
  gc.bias = m.bias;
  gc.vocab_size = vocab_size;
  return std::make_unique<nn::GPT>(gc, seed);
}

void write_model(const nn::CausalLM& model, const std::filesystem::path& dir) {
  io::write_model_files(model, dir);
}

void load_weights(nn::CausalLM& model, const std::filesystem::path& dir) {
  const std::string hint = "; use checkpoint.resume: never or another run.out_dir";
  if (const auto* want_gpt = dynamic_cast<const nn::GPT*>(&model)) {
    const nn::GPTConfig have = io::read_gpt_config(dir / io::kConfigFile);
    const nn::GPTConfig& want = want_gpt->config();
    LMF_CHECK(have.n_layer == want.n_layer && have.n_head == want.n_head && have.n_embd == want.n_embd &&
                  have.block_size == want.block_size && have.vocab_size == want.vocab_size,
              "resume: ", dir.string(), " holds a model of a different shape (n_layer ", have.n_layer, ", n_head ",
              have.n_head, ", n_embd ", have.n_embd, ", positions ", have.block_size, ", vocab ", have.vocab_size,
              ") than this config", hint);
  }
  try {
    io::load_weights(model, dir);
  } catch (const Error& e) {
    throw Error(str("resume: ", e.what(), hint));
  }
}

bool has_lora(const nn::CausalLM& model) { return nn::has_lora(model); }

void merge_lora(nn::CausalLM& model) { nn::merge_lora(model); }

// finetune.lora.targets -> the model's own target names: each is one of them, or the last
// component of exactly one ("q_proj" -> "self_attn.q_proj", as PEFT's target_modules are written).
std::vector<std::string> resolve_lora_targets(const nn::CausalLM& model, const std::vector<std::string>& wanted) {
  const std::vector<std::string> known = model.lora_target_names();
  if (wanted.empty()) return known;
  std::string list;
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  std::vector<std::string> out;
  for (const auto& w : wanted) {
    std::vector<std::string> matches;
    for (const auto& k : known)
      if (k == w || (k.size() > w.size() && k.compare(k.size() - w.size(), w.size(), w) == 0 &&
                     k[k.size() - w.size() - 1] == '.'))
        matches.push_back(k);
    if (std::find(matches.begin(), matches.end(), w) != matches.end()) matches = {w};
    LMF_CHECK(!matches.empty(), "finetune.lora.targets: '", w, "' is not a layer of this ", model.arch(),
              " model (valid: ", list, ")");
    LMF_CHECK(matches.size() == 1, "finetune.lora.targets: '", w, "' matches ", matches[0], " and ", matches[1],
              "; write the full name");
    LMF_CHECK(std::find(out.begin(), out.end(), matches[0]) == out.end(), "finetune.lora.targets: ", matches[0],
              " is named twice");
    out.push_back(matches[0]);
  }
  return out;
}

void add_lora(nn::CausalLM& model, const LoraConfig& lora, uint64_t seed) {
  const nn::LoraOptions options{lora.rank, lora.alpha, lora.dropout, resolve_lora_targets(model, lora.targets), seed};
  try {
    options.validate();
  } catch (const Error& e) {
    throw Error(str("finetune.", e.what()));
  }
  nn::add_lora(model, options);
}

}  // namespace lmf::train::detail
