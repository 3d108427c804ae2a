// Config parsing: defaults, every kind of bad input named with its file, key and line, overrides
// with the same checks, and a to_yaml() that parses back to the same configuration.
#include <catch2/catch.hpp>

#include "lmforge/core/error.h"
#include "lmforge/train/config.h"

using lmf::train::Config;

namespace {
const char* kMinimal = "data:\n  train: data/train.bin\ntraining:\n  max_steps: 10\n";

std::string error_of(const std::string& yaml, std::vector<std::string> overrides = {}) {
  try {
    Config::parse(yaml, "cfg.yaml", overrides);
  } catch (const lmf::Error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("a minimal config takes the documented defaults") {
  const Config c = Config::parse(kMinimal, "cfg.yaml");
  CHECK(c.data.train == "data/train.bin");
  CHECK(c.training.max_steps == 10);
  CHECK(c.training.lr == Approx(1e-3f));
  CHECK(c.model.n_layer == 4);
  CHECK(c.checkpoint.resume == lmf::train::ResumeMode::automatic);
  CHECK(c.finetune.lora.rank == 0);
}

TEST_CASE("nested sections and lists are read") {
  const Config c = Config::parse(std::string(kMinimal) +
                                     "finetune:\n  freeze: ['h.0.*']\n  lora:\n    rank: 8\n"
                                     "    targets: [attn.c_attn]\n",
                                 "cfg.yaml");
  CHECK(c.finetune.freeze == std::vector<std::string>{"h.0.*"});
  CHECK(c.finetune.lora.rank == 8);
  CHECK(c.finetune.lora.targets == std::vector<std::string>{"attn.c_attn"});
}

TEST_CASE("an unknown key names itself, its line and the closest valid key") {
  const std::string e = error_of(std::string(kMinimal) + "  lrr: 0.1\n");
  CHECK_THAT(e, Catch::Contains("cfg.yaml:5"));
  CHECK_THAT(e, Catch::Contains("unknown key 'training.lrr'"));
  CHECK_THAT(e, Catch::Contains("did you mean 'training.lr'"));
  CHECK_THAT(error_of(std::string(kMinimal) + "modle:\n  n_layer: 2\n"), Catch::Contains("unknown key 'modle'"));
}

TEST_CASE("wrong types and out-of-range values are named with their key and line") {
  CHECK_THAT(error_of(std::string(kMinimal) + "  lr: fast\n"),
             Catch::Contains("cfg.yaml:5: training.lr: expected a number, got 'fast'"));
  CHECK_THAT(error_of(std::string(kMinimal) + "  batch_size: 0\n"),
             Catch::Contains("training.batch_size: must be >= 1"));
  CHECK_THAT(error_of(std::string(kMinimal) + "  schedule: linear\n"),
             Catch::Contains("training.schedule: must be one of constant, cosine"));
  CHECK_THAT(error_of(std::string(kMinimal) + "model:\n  dropout: 1.5\n"), Catch::Contains("model.dropout"));
  CHECK_THAT(error_of(std::string(kMinimal) + "run:\n  device: gpu\n"), Catch::Contains("run.device"));
  CHECK_THAT(error_of(std::string(kMinimal) + "run:\n  matmul_precision: fp16\n"),
             Catch::Contains("run.matmul_precision: must be one of fp32, bf16"));
  CHECK_THAT(error_of(std::string(kMinimal) + "model: 3\n"), Catch::Contains("expected a mapping"));
}

TEST_CASE("malformed YAML and inconsistent settings are clear errors") {
  CHECK_THAT(error_of("data: [unclosed\n"), Catch::Contains("invalid YAML"));
  CHECK_THAT(error_of("training:\n  max_steps: 5\n"), Catch::Contains("data.train: required"));
  CHECK_THAT(error_of("data:\n  train: x.bin\n"), Catch::Contains("max_steps"));
  CHECK_THAT(error_of(std::string(kMinimal) + "model:\n  n_embd: 100\n  n_head: 3\n"),
             Catch::Contains("divisible"));
}

TEST_CASE("overrides use dotted keys with the same validation") {
  const Config c = Config::parse(kMinimal, "cfg.yaml", {"training.lr=3e-4", "model.n_layer=6",
                                                        "training.betas=[0.9, 0.95]"});
  CHECK(c.training.lr == Approx(3e-4f));
  CHECK(c.model.n_layer == 6);
  CHECK(c.training.betas[1] == Approx(0.95f));
  CHECK_THAT(error_of(kMinimal, {"training.lr=abc"}), Catch::Contains("override 'training.lr=abc'"));
  CHECK_THAT(error_of(kMinimal, {"training.lrr=1"}), Catch::Contains("did you mean 'training.lr'"));
  CHECK_THAT(error_of(kMinimal, {"nonsense"}), Catch::Contains("expected KEY=VALUE"));
}

TEST_CASE("to_yaml parses back to the same configuration") {
  const Config a = Config::parse(kMinimal, "cfg.yaml", {"training.lr=0.0123", "finetune.lora.rank=4"});
  const Config b = Config::parse(a.to_yaml(), "resolved.yaml");
  CHECK(b.to_yaml() == a.to_yaml());
  CHECK(b.training.lr == a.training.lr);
  CHECK(b.finetune.lora.rank == 4);
  CHECK(Config::keys().size() > 40);
}

TEST_CASE("every shipped config in configs/ parses and validates") {
  const std::vector<std::string> names = {"shakespeare_char", "fortunes_pretrain", "fortunes_finetune",
                                          "gpt2_124m", "gpt2_finetune", "sft_chat"};
  for (const auto& name : names) {
    INFO(name);
    const Config c = Config::load(std::string(LMF_SOURCE_DIR) + "/configs/" + name + ".yaml");
    CHECK(c.run.name == name);
  }
  const Config sft = Config::load(std::string(LMF_SOURCE_DIR) + "/configs/sft_chat.yaml");
  CHECK(sft.training.loss == lmf::train::LossTargets::assistant);
  CHECK(Config::load(std::string(LMF_SOURCE_DIR) + "/configs/gpt2_finetune.yaml").training.loss == lmf::train::LossTargets::all);
  const Config llama = Config::load(std::string(LMF_SOURCE_DIR) + "/configs/llama_char.yaml");
  CHECK(llama.model.arch == lmf::train::ModelArch::llama);
  CHECK(llama.model.n_kv_head == 2);
  CHECK(llama.data.train == "data/shakespeare_char");
  const Config recipe = Config::load(std::string(LMF_SOURCE_DIR) + "/configs/shakespeare_char.yaml");
  // nanoGPT's character-level CPU recipe, as the config promises.
  CHECK(recipe.model.n_layer == 4);
  CHECK(recipe.model.n_head == 4);
  CHECK(recipe.model.n_embd == 128);
  CHECK(recipe.model.block_size == 64);
  CHECK(recipe.training.batch_size == 12);
  CHECK(recipe.training.max_steps == 2000);
  CHECK(recipe.training.warmup_steps == 100);
  CHECK(recipe.training.betas[1] == Approx(0.99f));
  CHECK(recipe.eval.interval == 250);
  CHECK(recipe.eval.batches == 20);
}

TEST_CASE("run.cuda_graph is off by default and refuses what a capture cannot hold") {
  CHECK_FALSE(Config::parse(kMinimal, "cfg.yaml").run.cuda_graph);
  CHECK(Config::parse(kMinimal, "cfg.yaml", {"run.cuda_graph=true", "run.device=cuda"}).run.cuda_graph);
  CHECK_THAT(error_of(kMinimal, {"run.cuda_graph=true", "run.device=cpu"}),
             Catch::Contains("run.cuda_graph") && Catch::Contains("run.device: cuda"));
  CHECK_THAT(error_of(kMinimal, {"run.cuda_graph=true", "training.grad_accum_steps=2"}),
             Catch::Contains("run.cuda_graph") && Catch::Contains("grad_accum_steps is 2"));
  CHECK_THAT(error_of(kMinimal, {"run.cuda_graph=true", "model.dropout=0.1"}),
             Catch::Contains("run.cuda_graph") && Catch::Contains("dropout masks"));
  CHECK_THAT(error_of(kMinimal, {"run.cuda_graph=true", "run.device=cuda", "training.optimizer=muon"}),
             Catch::Contains("run.cuda_graph") && Catch::Contains("training.optimizer: adamw"));
  CHECK_THAT(error_of(std::string(kMinimal) + "run:\n  cuda_graph: maybe\n"), Catch::Contains("run.cuda_graph"));
}
