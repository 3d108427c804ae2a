// GPT-2 behind the trainer's model seam (see model_io.h): each function casts to nn::GPT and
// says plainly when a model of another kind needs a loader this build does not have yet.
#include "train/model_io.h"

#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/lora.h"

namespace lmf::train::detail {
namespace {

nn::GPT& as_gpt(nn::CausalLM& model, const char* what) {
  auto* gpt = dynamic_cast<nn::GPT*>(&model);
  LMF_CHECK(gpt, what, ": supported for GPT-2 models only in this version (the model is '", model.arch(), "')");
  return *gpt;
}
const nn::GPT& as_gpt(const nn::CausalLM& model, const char* what) {
  return as_gpt(const_cast<nn::CausalLM&>(model), what);
}

}  // namespace

std::unique_ptr<nn::CausalLM> load_model(const std::filesystem::path& dir, uint64_t seed) {
  return io::load_gpt(dir, seed);
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

void write_model(const nn::CausalLM& model, const std::filesystem::path& dir) {
  io::write_model_files(as_gpt(model, "checkpoint"), dir);
}

void check_same_shape(const nn::CausalLM& loaded, const nn::CausalLM& model, const std::filesystem::path& dir) {
  const auto* have_gpt = dynamic_cast<const nn::GPT*>(&loaded);
  const auto* want_gpt = dynamic_cast<const nn::GPT*>(&model);
  if (have_gpt && want_gpt) {
    const nn::GPTConfig& have = have_gpt->config();
    const nn::GPTConfig& want = want_gpt->config();
    LMF_CHECK(have.n_layer == want.n_layer && have.n_head == want.n_head && have.n_embd == want.n_embd &&
                  have.block_size == want.block_size && have.vocab_size == want.vocab_size,
              "resume: ", dir.string(), " holds a model of a different shape (n_layer ", have.n_layer, ", n_head ",
              have.n_head, ", n_embd ", have.n_embd, ", positions ", have.block_size, ", vocab ", have.vocab_size,
              ") than this config; use checkpoint.resume: never or another run.out_dir");
    return;
  }
  LMF_CHECK(loaded.arch() == model.arch(), "resume: ", dir.string(), " holds a '", loaded.arch(),
            "' model, not '", model.arch(), "'; use checkpoint.resume: never or another run.out_dir");
  const auto have = loaded.named_parameters(), want = model.named_parameters();
  LMF_CHECK(have.size() == want.size(), "resume: ", dir.string(), " holds ", have.size(), " parameters, the model ",
            want.size(), "; use checkpoint.resume: never or another run.out_dir");
  for (std::size_t i = 0; i < have.size(); ++i)
    LMF_CHECK(have[i].first == want[i].first && have[i].second.shape() == want[i].second.shape(), "resume: ",
              dir.string(), " holds a model of a different shape (", have[i].first, " ",
              shape_str(have[i].second.shape()), " vs ", want[i].first, " ", shape_str(want[i].second.shape()),
              "); use checkpoint.resume: never or another run.out_dir");
}

bool has_lora(const nn::CausalLM& model) {
  const auto* gpt = dynamic_cast<const nn::GPT*>(&model);
  return gpt && nn::has_lora(*gpt);
}

void merge_lora(nn::CausalLM& model) { nn::merge_lora(as_gpt(model, "merging LoRA adapters")); }

void add_lora(nn::CausalLM& model, const LoraConfig& lora, uint64_t seed) {
  const nn::LoraOptions options{lora.rank, lora.alpha, lora.dropout, lora.targets, seed};
  try {
    options.validate();
  } catch (const Error& e) {
    throw Error(str("finetune.", e.what()));
  }
  nn::add_lora(as_gpt(model, "finetune.lora"), options);
}

}  // namespace lmf::train::detail
