// LoRA fine-tuning driven like a user drives it: pretrain a tiny char model, fine-tune adapters on
// different text, check that the domain loss falls while the saved base weights stay bit-identical,
// that a resumed LoRA run matches an uninterrupted one, and that `lmforge convert --merge-lora`
// writes a plain checkpoint evaluating to the adapted model's loss; bad convert inputs fail
// cleanly.
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "e2e/cli_run.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using lmf::test::lmforge;
using lmf::test::quote;
using lmf::test::require_ok;
using lmf::test::require_clean_error;
using lmf::test::RunResult;
using lmf::test::slurp;
using lmf::test::write_file;

namespace {

fs::path work_dir(const std::string& name) { return lmf::test::work_dir("cli-lora", name); }

// A pretraining corpus of shuffled words, and a domain corpus: the same letters in one fixed
// phrase, so a fine-tuned model can predict it far better than the pretrained one.
struct Corpora {
  fs::path pretrain;  // prepared directory (train.bin, val.bin, tokenizer.json)
  fs::path domain;
};

const Corpora& corpora() {
  static const Corpora c = [] {
    const fs::path dir = work_dir("data");
    static const char* words[] = {"alpha", "beta",  "gamma", "delta",
                                  "rho",   "sigma", "tau",   "omega"};
    std::string text;
    uint32_t state = 7;
    for (int i = 0; i < 3000; ++i) {
      state = state * 1664525u + 1013904223u;
      text += words[(state >> 16) % 8];
      text += i % 9 == 8 ? "\n" : " ";
    }
    write_file(dir / "pretrain.txt", text);
    std::string domain;
    for (int i = 0; i < 300; ++i) domain += "omega tau beta rho gamma\n";
    write_file(dir / "domain.txt", domain);
    Corpora out{dir / "pre", dir / "dom"};
    require_ok(lmforge(dir, "prepare --input " + quote((dir / "pretrain.txt").string()) +
                                " --out " + quote(out.pretrain.string()) + " --tokenizer char"));
    // The domain text must use the pretrained model's vocabulary.
    require_ok(lmforge(dir, "prepare --input " + quote((dir / "domain.txt").string()) + " --out " +
                                quote(out.domain.string()) + " --tokenizer " +
                                quote((out.pretrain / "tokenizer.json").string())));
    return out;
  }();
  return c;
}

std::string pretrain_yaml(const fs::path& out_dir) {
  return "run:\n"
         "  out_dir: " +
         out_dir.string() +
         "\n"
         "  seed: 5\n"
         "  threads: 1\n"
         "data:\n"
         "  train: " +
         corpora().pretrain.string() +
         "\n"
         "model:\n"
         "  n_layer: 1\n"
         "  n_head: 2\n"
         "  n_embd: 32\n"
         "  block_size: 16\n"
         "  dropout: 0.0\n"
         "training:\n"
         "  batch_size: 8\n"
         "  max_steps: 30\n"
         "  lr: 0.01\n"
         "  min_lr: 0.001\n"
         "  warmup_steps: 3\n"
         "eval:\n"
         "  interval: 0\n"
         "  batches: 2\n"
         "checkpoint:\n"
         "  interval: 0\n"
         "logging:\n"
         "  interval: 10\n"
         "  progress: plain\n";
}

std::string lora_yaml(const fs::path& out_dir, const fs::path& init, int max_steps) {
  return "run:\n"
         "  out_dir: " +
         out_dir.string() +
         "\n"
         "  seed: 9\n"
         "  threads: 1\n"
         "data:\n"
         "  train: " +
         corpora().domain.string() +
         "\n"
         "model:\n"
         "  init: " +
         init.string() +
         "\n"
         "  block_size: 16\n"
         "training:\n"
         "  batch_size: 8\n"
         "  max_steps: " +
         std::to_string(max_steps) +
         "\n"
         "  lr: 0.01\n"
         "  warmup_steps: 2\n"
         "  schedule: constant\n"
         "eval:\n"
         "  interval: 0\n"
         "  batches: 2\n"
         "checkpoint:\n"
         "  interval: 3\n"
         "  keep_last: 3\n"
         "finetune:\n"
         "  lora:\n"
         "    rank: 4\n"
         "    alpha: 8\n"
         "    targets: [attn.c_attn, mlp.c_fc, mlp.c_proj]\n"
         "logging:\n"
         "  interval: 10\n"
         "  progress: plain\n";
}

// The pretrained model, trained once for every test case.
const fs::path& pretrained() {
  static const fs::path final_dir = [] {
    const fs::path dir = work_dir("pretrain");
    write_file(dir / "cfg.yaml", pretrain_yaml(dir / "run"));
    require_ok(lmforge(dir, "train " + quote((dir / "cfg.yaml").string())));
    return dir / "run" / "final";
  }();
  return final_dir;
}

double eval_loss(const fs::path& dir, const fs::path& checkpoint) {
  const RunResult r = lmforge(dir, "eval --json --checkpoint " + quote(checkpoint.string()) + " --data " +
                                 quote((corpora().domain / "val.bin").string()));
  require_ok(r);
  return json::parse(r.out).at("loss").get<double>();
}

// Every tensor of two safetensors files, compared bit for bit.
bool same_tensors(const fs::path& a, const fs::path& b) {
  const auto x = lmf::io::read_safetensors(a), y = lmf::io::read_safetensors(b);
  if (x.tensors.size() != y.tensors.size()) return false;
  for (const auto& [name, t] : x.tensors) {
    auto it = y.tensors.find(name);
    if (it == y.tensors.end() || it->second.shape() != t.shape()) return false;
    const auto u = t.to_vector(), v = it->second.to_vector();
    if (std::memcmp(u.data(), v.data(), u.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

// Largest elementwise difference between two files holding the same tensors.
double max_abs_diff(const fs::path& a, const fs::path& b) {
  const auto x = lmf::io::read_safetensors(a), y = lmf::io::read_safetensors(b);
  REQUIRE(x.tensors.size() == y.tensors.size());
  double m = 0;
  for (const auto& [name, t] : x.tensors) {
    INFO(name);
    REQUIRE(y.tensors.count(name));
    const auto u = t.to_vector(), v = y.tensors.at(name).to_vector();
    REQUIRE(u.size() == v.size());
    for (std::size_t i = 0; i < u.size(); ++i)
      m = std::max(m, std::abs(double(u[i]) - double(v[i])));
  }
  return m;
}

}  // namespace

TEST_CASE(
    "LoRA fine-tuning lowers the domain loss, leaves the base intact, and merges to the same loss",
    "[e2e]") {
  const fs::path dir = work_dir("finetune");
  const fs::path base = pretrained();
  const double before = eval_loss(dir, base);

  write_file(dir / "cfg.yaml", lora_yaml(dir / "run", base, 30));
  require_ok(lmforge(dir, "train " + quote((dir / "cfg.yaml").string())));
  const fs::path tuned = dir / "run" / "final";
  REQUIRE(fs::exists(tuned / "adapters.safetensors"));
  const json adapter_config = json::parse(slurp(tuned / "adapter_config.json"));
  CHECK(adapter_config.at("rank") == 4);
  CHECK(adapter_config.at("alpha") == 8.0);
  CHECK(adapter_config.at("targets") == json({"attn.c_attn", "mlp.c_fc", "mlp.c_proj"}));

  const double after = eval_loss(dir, tuned);
  INFO("domain loss before " << before << ", after LoRA " << after);
  CHECK(after < before - 0.1);
  // Only adapters trained: the base file is the pretrained one, tensor for tensor, bit for bit.
  CHECK(same_tensors(tuned / "model.safetensors", base / "model.safetensors"));

  const fs::path merged = dir / "merged";
  const RunResult convert = lmforge(
      dir, "convert --merge-lora " + quote(tuned.string()) + " --output " + quote(merged.string()));
  require_ok(convert);
  CHECK(fs::exists(merged / "model.safetensors"));
  CHECK(fs::exists(merged / "config.json"));
  CHECK(fs::exists(merged / "tokenizer.json"));
  CHECK_FALSE(fs::exists(merged / "adapters.safetensors"));
  CHECK_FALSE(fs::exists(merged / "adapter_config.json"));
  CHECK(std::abs(eval_loss(dir, merged) - after) <= 1e-5);
  CHECK_FALSE(same_tensors(merged / "model.safetensors", base / "model.safetensors"));

  // Greedy generation from the adapted checkpoint continues like the merged one.
  const std::string generate = " generate --prompt omega --max-new-tokens 24 --temperature 0";
  const RunResult from_tuned = lmforge(dir, generate + " --checkpoint " + quote(tuned.string()));
  require_ok(from_tuned);
  const RunResult from_merged = lmforge(dir, generate + " --checkpoint " + quote(merged.string()));
  require_ok(from_merged);
  CHECK(from_tuned.out == from_merged.out);

  // Bad inputs (checked here rather than in sections, which would retrain for each one).
  require_clean_error(lmforge(dir, "convert --merge-lora " + quote(tuned.string()) + " --output " +
                                       quote(merged.string())),
                      "--force");
  require_ok(lmforge(dir, "convert --merge-lora " + quote(tuned.string()) + " --output " +
                              quote(merged.string()) + " --force"));
  CHECK(std::abs(eval_loss(dir, merged) - after) <= 1e-5);
  // A checkpoint without adapters has nothing to merge.
  require_clean_error(lmforge(dir, "convert --merge-lora " + quote(base.string()) + " --output " +
                                       quote((dir / "out2").string())),
                      "no LoRA adapters");
  CHECK_FALSE(fs::exists(dir / "out2"));
  require_clean_error(lmforge(dir, "convert --merge-lora " + quote((dir / "nope").string()) +
                                       " --output " + quote((dir / "out3").string())),
                      "nope");
  require_clean_error(lmforge(dir, "convert --merge-lora " + quote(tuned.string()) + " --output " +
                                       quote(tuned.string()) + " --force"),
                      "must differ");
}

TEST_CASE("a resumed LoRA run ends with the same adapters as an uninterrupted one", "[e2e]") {
  const fs::path dir = work_dir("resume");
  const fs::path base = pretrained();
  write_file(dir / "straight.yaml", lora_yaml(dir / "straight", base, 6));
  require_ok(lmforge(dir, "train " + quote((dir / "straight.yaml").string())));

  write_file(dir / "split.yaml", lora_yaml(dir / "split", base, 6));
  require_ok(
      lmforge(dir, "train " + quote((dir / "split.yaml").string()) + " training.max_steps=3"));
  require_ok(lmforge(dir, "train " + quote((dir / "split.yaml").string())));
  CHECK(slurp(dir / "split" / "metrics.jsonl").find("\"resume\"") != std::string::npos);

  // Bit for bit: a training step is deterministic for a given thread count, so a resume that
  // restores adapters, moments, RNG and loader position exactly ends on exactly the same adapters.
  CHECK(max_abs_diff(dir / "straight" / "final" / "adapters.safetensors",
                     dir / "split" / "final" / "adapters.safetensors") == 0.0);
  CHECK(same_tensors(dir / "split" / "final" / "model.safetensors", base / "model.safetensors"));
  // The adapters did train (B starts at zero).
  CHECK_FALSE(
      same_tensors(dir / "split" / "final" / "adapters.safetensors",
                   dir / "split" / "checkpoints" / "step_00000003" / "adapters.safetensors"));
}
