// `lmforge train` from a Hugging Face-format checkpoint (sequential order, constant lr, clipping)
// follows an independent float64 PyTorch run (tests/reference/train_reference.py) step by step.
// Tolerance: 2e-4 relative per step. lmforge computes in f32; over 8 AdamW steps the f32 rounding
// of the forward and backward moves the loss by about 1e-6 relative, so a wrong update rule,
// schedule, clipping or data order (each changes the losses by 1e-2 or more) cannot pass.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "e2e/cli_run.h"
#include "lmforge/data/shard.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/gpt.h"

namespace fs = std::filesystem;
using lmf::test::run_merged;
using lmf::test::RunResult;

namespace {

bool torch_available() {
  return std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
}

}  // namespace

TEST_CASE("training a Hugging Face checkpoint follows PyTorch's per-step losses") {
  if (!torch_available()) {
    WARN("skipped: /usr/bin/python3 has no torch (Debian package python3-torch)");
    return;
  }
  const fs::path dir = fs::path(LMF_BINARY_DIR) / "test-data" / "train_torch_parity";
  fs::remove_all(dir);
  fs::create_directories(dir);

  // A random GPT-2 in Hugging Face form, and a shard of structured tokens (learnable, so the
  // losses move by more than rounding between steps).
  lmf::nn::GPTConfig config;
  config.n_layer = 2;
  config.n_head = 2;
  config.n_embd = 32;
  config.block_size = 32;
  config.vocab_size = 50;
  lmf::nn::GPT model(config, 7);
  lmf::io::save_gpt(model, dir / "init");
  std::vector<int32_t> ids(3000);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * i + 3 * i) % 50);
  lmf::data::write_shard((dir / "train.bin").string(), ids, lmf::data::TokenWidth::u16);

  const int batch = 4, block = 16, steps = 8;
  std::ofstream(dir / "cfg.yaml") << "run: {out_dir: " << (dir / "run").string() << ", threads: 1}\n"
                                  << "data: {train: " << (dir / "train.bin").string() << ", order: sequential}\n"
                                  << "model: {init: " << (dir / "init").string() << ", block_size: " << block << "}\n"
                                  << "training: {batch_size: " << batch << ", max_steps: " << steps
                                  << ", lr: 0.003, schedule: constant, warmup_steps: 0, betas: [0.9, 0.95],"
                                  << " eps: 1.0e-8, weight_decay: 0.1, grad_clip: 1.0}\n"
                                  << "checkpoint: {interval: 0, resume: never}\n"
                                  << "logging: {interval: 1, progress: none}\n";
  const RunResult train = run_merged(std::string(LMF_CLI) + " train " + (dir / "cfg.yaml").string());
  INFO(train.out);
  REQUIRE(train.exit_code == 0);
  std::vector<double> ours;
  std::ifstream metrics(dir / "run" / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("train_loss")) ours.push_back(j["train_loss"].get<double>());
  }

  const RunResult ran_reference = run_merged("cd " + std::string(LMF_SOURCE_DIR) + "/tests/reference && /usr/bin/python3 train_reference.py" +
                                        " --checkpoint " + (dir / "init").string() + " --data " + (dir / "train.bin").string() +
                                        " --batch-size " + std::to_string(batch) + " --block-size " + std::to_string(block) +
                                        " --steps " + std::to_string(steps) + " --lr 0.003");
  const std::string& reference = ran_reference.out;
  INFO(reference);
  REQUIRE(ran_reference.exit_code == 0);
  std::vector<double> theirs;
  const std::regex loss_re(R"(step \d+ loss ([-0-9.eE+]+))");
  for (auto it = std::sregex_iterator(reference.begin(), reference.end(), loss_re); it != std::sregex_iterator(); ++it)
    theirs.push_back(std::stod((*it)[1]));

  REQUIRE(ours.size() == static_cast<std::size_t>(steps));
  REQUIRE(theirs.size() == static_cast<std::size_t>(steps));
  for (int s = 0; s < steps; ++s) {
    INFO("step " << s + 1 << ": lmforge " << ours[s] << ", PyTorch " << theirs[s]);
    CHECK(ours[s] == Approx(theirs[s]).epsilon(2e-4));
  }
  CHECK(theirs.back() < theirs.front() - 0.05);  // the run really trains
}
