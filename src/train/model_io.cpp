// Model building behind the trainer's seam (see model_io.h), and the calls that take any CausalLM.
#include "train/model_io.h"

#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/lora.h"

namespace lmf::train::detail {

std::unique_ptr<nn::CausalLM> load_model(const std::filesystem::path& dir, uint64_t seed) {
  return io::load_model(dir, seed);
}

std::unique_ptr<nn::CausalLM> build_model(const ModelConfig& m, int64_t vocab_size, uint64_t seed) {
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

void write_model(const nn::CausalLM& model, const std::filesystem::path& dir) { io::write_model_files(model, dir); }

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

void add_lora(nn::CausalLM& model, const LoraConfig& lora, uint64_t seed) {
  const nn::LoraOptions options{lora.rank, lora.alpha, lora.dropout, lora.targets, seed};
  try {
    options.validate();
  } catch (const Error& e) {
    throw Error(str("finetune.", e.what()));
  }
  nn::add_lora(model, options);
}

}  // namespace lmf::train::detail
