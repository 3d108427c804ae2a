// The configs/smollm_finetune.yaml path on a tiny random Hugging Face Llama directory (GQA, a
// SentencePiece-style tokenizer.json with </s> as eos): prepare a text folder with the directory's
// tokenizer, LoRA on all seven projections by their short names, a checkpoint and an exact resume,
// `convert --merge-lora` back to a plain Hugging Face directory whose eval loss equals the adapted
// model's, and greedy generation with the KV cache that stops at config.json's eos_token_id.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "e2e/cli_run.h"
#include "lmforge/core/rng.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/generate/generate.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/nn/llama.h"
#include "lmforge/nn/lora.h"
#include "support/sentencepiece_json.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using lmf::test::lmforge;
using lmf::test::quote;
using lmf::test::require_ok;
using lmf::test::RunResult;
using lmf::test::slurp;
using lmf::test::write_file;

namespace {

fs::path work_dir(const std::string& name) { return lmf::test::work_dir("cli-hf-finetune", name); }

constexpr int32_t kEos = 2;

// Llama 2's tokenizer pipeline in miniature: <unk> <s> </s>, 256 byte-fallback tokens, then "▁"
// and the 26 lowercase letters, with merges for "▁t" and "▁th".
json tiny_tokenizer() {
  const std::string space = lmf::test::kSentencePieceSpace;
  std::vector<std::string> pieces = {space};
  for (char c = 'a'; c <= 'z'; ++c) pieces.emplace_back(1, c);
  pieces.push_back(space + "t");
  pieces.push_back(space + "th");
  return lmf::test::sentencepiece_tokenizer(
      lmf::test::sentencepiece_vocab(pieces), {space + " t", space + "t h"},
      json::array({lmf::test::special_token(1, "<s>"), lmf::test::special_token(kEos, "</s>")}));
}

// A random SmolLM-shaped model in miniature (GQA 4/2 heads, untied head), saved as a Hugging Face
// directory with its tokenizer, as one downloaded from the Hub looks.
// A chat template kept in its own file, as newer Hugging Face directories do: prepare, the
// checkpoints and convert --merge-lora must carry it along with the tokenizer.
constexpr const char* kChatTemplate =
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}";

const fs::path& base_model() {
  static const fs::path dir = [] {
    const fs::path d = work_dir("base");
    lmf::nn::LlamaConfig c;
    c.vocab_size = 288;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 64;
    c.bos_token_id = 1;
    c.eos_token_ids = {kEos};
    c.initializer_range = 0.1f;
    lmf::nn::Llama model(c, 21);
    lmf::io::save(model, d);
    write_file(d / "tokenizer.json", tiny_tokenizer().dump());
    write_file(d / "tokenizer_config.json", json({{"bos_token", "<s>"}, {"eos_token", "</s>"}}).dump());
    write_file(d / "chat_template.jinja", kChatTemplate);
    return d;
  }();
  return dir;
}

// A folder of text files in the tokenizer's alphabet, prepared with the model's tokenizer.
const fs::path& prepared_data() {
  static const fs::path data = [] {
    const fs::path d = work_dir("data");
    static const char* words[] = {"the", "cat", "sat", "on", "mat", "and", "then", "thought"};
    uint32_t state = 3;
    fs::create_directories(d / "texts");
    for (int file = 0; file < 3; ++file) {
      std::string text;
      for (int i = 0; i < 900; ++i) {
        state = state * 1664525u + 1013904223u;
        text += words[(state >> 16) % 8];
        text += i % 7 == 6 ? "\n" : " ";
      }
      write_file(d / "texts" / ("part" + std::to_string(file) + ".txt"), text);
    }
    require_ok(lmforge(d, "prepare --input " + quote((d / "texts").string()) + " --out " + quote((d / "prepared").string()) +
                              " --tokenizer " + quote(base_model().string())));
    return d / "prepared";
  }();
  return data;
}

// configs/smollm_finetune.yaml with the sizes of this test.
std::string finetune_args(const fs::path& config, const fs::path& out_dir, int64_t max_steps) {
  return "train " + quote(config.string()) + " model.init=" + quote(base_model().string()) + " data.train=" +
         quote(prepared_data().string()) + " run.out_dir=" + quote(out_dir.string()) +
         " run.threads=1 model.block_size=32 training.batch_size=4 training.max_steps=" + std::to_string(max_steps) +
         " training.warmup_steps=2 training.lr=0.01 training.min_lr=0.001 eval.interval=0 eval.batches=2"
         " checkpoint.interval=3 logging.interval=1 logging.progress=plain";
}

double eval_loss(const fs::path& dir, const fs::path& checkpoint) {
  const RunResult r = lmforge(dir, "eval --json --checkpoint " + quote(checkpoint.string()) + " --data " +
                                       quote((prepared_data() / "val.bin").string()));
  require_ok(r);
  return json::parse(r.out).at("loss").get<double>();
}

bool same_tensors(const fs::path& a, const fs::path& b) {
  const auto x = lmf::io::read_safetensors(a), y = lmf::io::read_safetensors(b);
  if (x.tensors.size() != y.tensors.size()) return false;
  for (const auto& [name, t] : x.tensors) {
    const auto it = y.tensors.find(name);
    if (it == y.tensors.end() || it->second.shape() != t.shape() || it->second.to_vector() != t.to_vector())
      return false;
  }
  return true;
}

}  // namespace

TEST_CASE("a Hugging Face Llama directory fine-tunes with LoRA, resumes exactly, merges and generates to eos", "[e2e]") {
  const fs::path dir = work_dir("run");
  const fs::path config = fs::path(LMF_SOURCE_DIR) / "configs" / "smollm_finetune.yaml";
  REQUIRE(fs::exists(config));

  // Uninterrupted, and stopped at step 3 (a checkpoint) then resumed.
  require_ok(lmforge(dir, finetune_args(config, dir / "straight", 6)));
  require_ok(lmforge(dir, finetune_args(config, dir / "split", 3)));
  require_ok(lmforge(dir, finetune_args(config, dir / "split", 6)));
  CHECK(slurp(dir / "split" / "metrics.jsonl").find("\"resume\"") != std::string::npos);
  const fs::path tuned = dir / "straight" / "final";
  CHECK(same_tensors(tuned / "adapters.safetensors", dir / "split" / "final" / "adapters.safetensors"));
  CHECK(same_tensors(tuned / "optimizer.safetensors", dir / "split" / "final" / "optimizer.safetensors"));
  // Adapters on all seven projections, resolved from their short names; the base stays as it was.
  const json adapter_config = json::parse(slurp(tuned / "adapter_config.json"));
  CHECK(adapter_config.at("targets") == json({"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                              "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}));
  CHECK(same_tensors(tuned / "model.safetensors", base_model() / "model.safetensors"));
  CHECK_FALSE(same_tensors(tuned / "adapters.safetensors",
                           dir / "straight" / "checkpoints" / "step_00000003" / "adapters.safetensors"));
  const double before = eval_loss(dir, base_model()), adapted = eval_loss(dir, tuned);
  INFO("loss before " << before << ", adapted " << adapted);
  CHECK(adapted < before);

  // Merged back into a plain Hugging Face directory: same loss, no adapters, the model's eos kept.
  const fs::path merged = dir / "merged";
  require_ok(lmforge(dir, "convert --merge-lora " + quote(tuned.string()) + " --output " + quote(merged.string())));
  CHECK_FALSE(fs::exists(merged / "adapters.safetensors"));
  const json merged_config = json::parse(slurp(merged / "config.json"));
  CHECK(merged_config.at("architectures") == json({"LlamaForCausalLM"}));
  CHECK(merged_config.at("eos_token_id") == kEos);
  CHECK(merged_config.at("num_key_value_heads") == 2);
  // The tokenizer's two companion files came along: eos/bos and the chat template.
  CHECK(slurp(merged / "chat_template.jinja") == kChatTemplate);
  CHECK(json::parse(slurp(merged / "tokenizer_config.json")).at("eos_token") == "</s>");
  CHECK(slurp(tuned / "chat_template.jinja") == kChatTemplate);
  const double merged_loss = eval_loss(dir, merged);
  CHECK(std::abs(merged_loss - adapted) <= 1e-5 * std::abs(adapted));
  const std::unique_ptr<lmf::nn::CausalLM> reloaded = lmf::io::load_model(merged);
  CHECK_FALSE(lmf::nn::has_lora(*reloaded));
  CHECK(reloaded->arch() == "llama");

  // Greedy generation with the KV cache: the library's ids, then the CLI with an eos placed at the
  // first repeat of the fourth generated id must stop right before it.
  const auto tokenizer = lmf::data::load_tokenizer(merged.string());
  const std::string prompt = "the cat";
  lmf::generate::GenerateOptions options;
  options.max_new_tokens = 12;
  options.sampling.temperature = 0.f;
  options.vocab_limit = tokenizer->vocab_size();
  lmf::Generator gen(1);
  reloaded->eval();
  const std::vector<int32_t> prompt_ids = tokenizer->encode(prompt);
  REQUIRE(tokenizer->decode(prompt_ids) == prompt);
  const std::vector<int32_t> ids = lmf::generate::generate(*reloaded, prompt_ids, options, gen);
  // What the CLI prints: the prompt, then the text each id adds after it.
  const auto printed = [&](std::size_t n) {
    std::vector<int32_t> all = prompt_ids;
    all.insert(all.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n));
    return tokenizer->decode(all) + "\n";
  };
  REQUIRE(ids.size() == 12);
  const int32_t stop = ids[3];
  const std::size_t first = static_cast<std::size_t>(std::find(ids.begin(), ids.end(), stop) - ids.begin());
  const std::string generate = "generate --prompt " + quote(prompt) + " --max-new-tokens 12 --temperature 0 --checkpoint ";
  const RunResult full = lmforge(dir, generate + quote(merged.string()) + " --ignore-eos");
  require_ok(full);
  CHECK(full.out == printed(ids.size()));

  const fs::path with_eos = dir / "merged_eos";
  fs::remove_all(with_eos);
  fs::copy(merged, with_eos);
  json edited = merged_config;
  edited["eos_token_id"] = stop;
  write_file(with_eos / "config.json", edited.dump(2));
  const RunResult stopped = lmforge(dir, generate + quote(with_eos.string()));
  require_ok(stopped);
  CHECK(stopped.out == printed(first));
  CHECK(stopped.err.find(std::to_string(first + 1) + " tokens") != std::string::npos);
}
