// custom_model: a decoder of one's own, written only from lmforge's public headers, trained by the
// library's Trainer (validation, checkpoints, exact resume) and sampled with the KV cache. The model
// is a small Llama-style decoder: RMSNorm, rotary positions, grouped-query attention and a SwiGLU
// MLP, with a head tied to the token embedding. Implementing nn::CausalLM is all the trainer,
// checkpoints and generation need from it.
//
//   custom_model WORK_DIR [STEPS]
//
// Trains STEPS steps (default 60) on a synthetic corpus written into WORK_DIR, stopping itself
// halfway and resuming from the checkpoint with a freshly built model, checks that the result is bit
// for bit the same as an uninterrupted run's, then prints a greedy sample.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <lmforge/lmforge.h>

namespace nn = lmf::nn;

// --- the model ---------------------------------------------------------------------------------
struct TinyLlamaConfig {
  int64_t vocab_size = 64;
  int64_t context = 64;
  int64_t n_layer = 2;
  int64_t hidden = 64;
  int64_t n_head = 4;
  int64_t n_kv_head = 2;  // grouped-query: two query heads share each K/V head
  int64_t intermediate = 172;
};

class DecoderLayer : public nn::Module {
 public:
  DecoderLayer(const TinyLlamaConfig& c, int64_t index, lmf::Generator& gen, const nn::RotaryEmbedding& rotary)
      : input_norm_(c.hidden, 1e-5f),
        attn_(attention_config(c, index), gen, &rotary),
        post_norm_(c.hidden, 1e-5f),
        mlp_(c.hidden, c.intermediate, gen) {
    register_module("input_layernorm", input_norm_);
    register_module("self_attn", attn_);
    register_module("post_attention_layernorm", post_norm_);
    register_module("mlp", mlp_);
  }

  // x (B, T, C) -> (B, T, C): pre-norm attention and MLP, each added to the residual stream.
  lmf::Tensor forward(const lmf::Tensor& x, nn::KVCache* cache) const {
    auto [h, normed] = post_norm_.forward_add(x, attn_.forward(input_norm_.forward(x), cache));
    return lmf::add(h, mlp_.forward(normed));
  }

 private:
  static nn::AttentionConfig attention_config(const TinyLlamaConfig& c, int64_t index) {
    nn::AttentionConfig a;
    a.hidden_size = c.hidden;
    a.n_head = c.n_head;
    a.n_kv_head = c.n_kv_head;
    a.max_positions = c.context;
    a.layer_index = index;
    return a;
  }
  nn::RMSNorm input_norm_;
  nn::Attention attn_;
  nn::RMSNorm post_norm_;
  nn::SwiGLUMLP mlp_;
};

class TinyLlama : public nn::CausalLM {
 public:
  TinyLlama(const TinyLlamaConfig& c, uint64_t seed)
      : config_(c), gen_(seed), dropout_gen_(seed + 1), embed_(c.vocab_size, c.hidden, gen_),
        rotary_(nn::RotaryConfig{c.hidden / c.n_head, 10000.0, c.context, {}}), norm_(c.hidden, 1e-5f) {
    register_module("embed_tokens", embed_);
    register_module("rotary_emb", rotary_);
    for (int64_t i = 0; i < c.n_layer; ++i) {
      layers_.push_back(std::make_unique<DecoderLayer>(c, i, gen_, rotary_));
      register_module(layer_prefix(i), *layers_.back());
    }
    register_module("norm", norm_);
  }

  // ids (B, T) -> logits (B, T, V); with a cache the positions continue after the cached ones.
  lmf::Tensor forward(const lmf::Tensor& ids, nn::KVCache* cache = nullptr) const override {
    lmf::Tensor x = embed_.forward(ids);  // (B, T, C)
    for (const auto& layer : layers_) x = layer->forward(x, cache);
    if (cache) cache->advance(ids.size(1));
    return lmf::linear(norm_.forward(x), embed_.weight());  // tied head: (B, T, V)
  }
  nn::KVCache make_cache(int64_t batch, int64_t capacity) const override {
    return nn::KVCache(config_.n_layer, batch, config_.n_kv_head, config_.hidden / config_.n_head,
                       capacity > 0 ? capacity : config_.context, slab()->device());
  }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t context_size() const override { return config_.context; }
  double flops_per_token(int64_t seq_len) const override {
    return 6.0 * double(num_parameters()) + 12.0 * double(config_.n_layer * config_.hidden * seq_len);
  }
  std::string arch() const override { return "tiny_llama"; }
  std::string hf_config_json() const override {
    return "{\"model_type\": \"tiny_llama\", \"vocab_size\": " + std::to_string(config_.vocab_size) + "}\n";
  }
  std::vector<std::string> lora_target_names() const override { return {"self_attn.q_proj", "self_attn.v_proj"}; }
  int64_t num_layers() const override { return config_.n_layer; }
  std::string layer_prefix(int64_t i) const override { return "layers." + std::to_string(i); }
  lmf::Generator& dropout_generator() const override { return dropout_gen_; }

 private:
  TinyLlamaConfig config_;
  lmf::Generator gen_;
  mutable lmf::Generator dropout_gen_;
  nn::Embedding embed_;
  nn::RotaryEmbedding rotary_;
  std::vector<std::unique_ptr<DecoderLayer>> layers_;
  nn::RMSNorm norm_;
};

// --- data: a synthetic language a small model learns in a few dozen steps -------------------------
void write_corpus(const std::filesystem::path& dir) {
  std::vector<int32_t> train, val;
  for (int64_t i = 0; i < 24000; ++i) train.push_back(static_cast<int32_t>((i * 7 + i / 64) % 64));
  for (int64_t i = 0; i < 4000; ++i) val.push_back(static_cast<int32_t>((i * 7 + i / 64 + 3) % 64));
  std::filesystem::create_directories(dir);
  lmf::data::write_shard((dir / "train.bin").string(), train, lmf::data::TokenWidth::u16);
  lmf::data::write_shard((dir / "val.bin").string(), val, lmf::data::TokenWidth::u16);
}

lmf::train::Config make_config(const std::filesystem::path& work, const std::string& run, int64_t steps) {
  lmf::train::Config c;
  c.run.out_dir = (work / run).string();
  c.run.seed = 7;
  c.data.train = (work / "data" / "train.bin").string();
  c.data.val = (work / "data" / "val.bin").string();
  c.model.vocab_size = 64;
  c.model.block_size = 32;
  c.training.batch_size = 8;
  c.training.max_steps = steps;
  c.training.lr = 3e-3f;
  c.training.min_lr = 3e-4f;
  c.training.warmup_steps = steps / 10;
  c.eval.interval = steps / 4;
  c.eval.batches = 4;
  c.checkpoint.interval = steps / 2;
  c.logging.interval = steps / 6;
  c.logging.progress = lmf::train::ProgressMode::none;
  c.validate();
  return c;
}

int main(int argc, char** argv) {
  try {
    if (argc < 2) {
      std::fprintf(stderr, "usage: custom_model WORK_DIR [STEPS]\n");
      return 2;
    }
    const std::filesystem::path work = argv[1];
    const int64_t steps = argc > 2 ? std::stoll(argv[2]) : 60;
    if (!std::filesystem::exists(work / "data" / "train.bin")) write_corpus(work / "data");
    const TinyLlamaConfig mc;

    // Train until the halfway checkpoint and stop there (a callback may end a run early)...
    lmf::train::Callbacks stop_halfway;
    stop_halfway.on_step = [&](const lmf::train::StepMetrics& m) { return m.step < steps / 2; };
    stop_halfway.on_eval = [](int64_t step, float val_loss) {
      std::printf("step %lld | val loss %.4f\n", static_cast<long long>(step), val_loss);
    };
    {
      lmf::train::Trainer first(make_config(work, "run", steps), std::make_unique<TinyLlama>(mc, 7), stop_halfway);
      const lmf::train::TrainResult r = first.fit();
      std::printf("first run stopped at step %lld (%s)\n", static_cast<long long>(r.steps), r.stop_reason.c_str());
    }
    // ...then a fresh process-like start resumes the newest checkpoint and finishes the run.
    lmf::train::Callbacks log_evals;
    log_evals.on_eval = stop_halfway.on_eval;
    lmf::train::Trainer second(make_config(work, "run", steps), std::make_unique<TinyLlama>(mc, 999), log_evals);
    const lmf::train::TrainResult r = second.fit();
    std::printf("resumed run finished at step %lld (%s), final train loss %.4f\n", static_cast<long long>(r.steps),
                r.stop_reason.c_str(), r.last_train_loss);

    // The same run without the interruption must end with the very same weights.
    lmf::train::Trainer straight(make_config(work, "run_straight", steps), std::make_unique<TinyLlama>(mc, 7));
    straight.fit();
    const std::vector<float> resumed = second.model().param_slab().to_vector();
    const std::vector<float> uninterrupted = straight.model().param_slab().to_vector();
    std::printf("resume is bit-exact: %s\n", resumed == uninterrupted ? "yes" : "NO");
    if (resumed != uninterrupted) return 1;

    // Greedy decoding with the KV cache: the model's own forward, one token at a time.
    lmf::generate::GenerateOptions options;
    options.max_new_tokens = 24;
    options.sampling.temperature = 0.f;
    lmf::Generator gen(1);
    const std::vector<int32_t> prompt = {0, 7, 14, 21};
    const std::vector<int32_t> out = lmf::generate::generate(second.model(), prompt, options, gen);
    std::printf("sample:");
    for (int32_t id : out) std::printf(" %d", id);
    std::printf("\n");
    return 0;
  } catch (const lmf::Error& e) {
    std::fprintf(stderr, "custom_model: error: %s\n", e.what());
    return 1;
  }
}
