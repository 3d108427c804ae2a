// End-to-end tests of `lmforge eval`, run as a user would run the binary. The central check: a
// random GPT saved in Hugging Face form evaluates to the same loss as an independent PyTorch
// GPT-2 (tests/reference/eval_reference.py) on the same tokens. Bad inputs must give one clear
// error line naming the file and a non-zero exit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "e2e/cli_run.h"
#include "lmforge/autograd.h"
#include "lmforge/data/shard.h"
#include "lmforge/io/checkpoint.h"

namespace fs = std::filesystem;
using lmf::Tensor;
using lmf::test::quote;
using lmf::test::run;
using lmf::test::RunResult;
using lmf::test::slurp;
using lmf::test::TempDir;

namespace {

RunResult run_eval(const std::string& args, const fs::path& dir) {
  return run(quote(LMF_CLI) + " eval " + args, dir);
}

// The value after "key: " in line-oriented output.
double read_value(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ": ", 0) == 0) return std::stod(line.substr(key.size() + 2));
  FAIL("no '" << key << "' in output:\n" << text);
  return 0;
}

lmf::nn::GPTConfig eval_config() {
  lmf::nn::GPTConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 32;
  c.block_size = 64;
  c.vocab_size = 300;
  return c;
}

// Random weights well away from the N(0, 0.02) initialisation (biases and LayerNorm parameters
// included), so every parameter and every layout decision shows in the loss.
std::unique_ptr<lmf::nn::GPT> random_gpt() {
  auto gpt = std::make_unique<lmf::nn::GPT>(eval_config(), 3);
  lmf::Generator gen(11);
  lmf::NoGradGuard no_grad;
  for (auto& [name, p] : gpt->named_parameters()) {
    const bool gain = name.find("ln_") != std::string::npos && name.find(".weight") != std::string::npos;
    Tensor dst = p;
    dst.copy_(Tensor::randn(p.shape(), gen, gain ? 1.f : 0.f, gain ? 0.2f : 0.3f));
  }
  return gpt;
}

std::vector<int32_t> random_tokens(std::size_t n, int32_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = dist(rng);
  return ids;
}

bool reference_python_available(std::string& reason) {
  if (!fs::exists("/usr/bin/python3")) {
    reason = "/usr/bin/python3 is not installed";
    return false;
  }
  if (std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
    reason = "/usr/bin/python3 cannot import torch and numpy";
    return false;
  }
  return true;
}

double reference_loss(const fs::path& ckpt, const fs::path& shard, int64_t block_size,
                      const fs::path& dir) {
  const std::string script = std::string(LMF_SOURCE_DIR) + "/tests/reference/eval_reference.py";
  RunResult r = run("/usr/bin/python3 " + quote(script) + " --checkpoint " + quote(ckpt.string()) +
                        " --data " + quote(shard.string()) +
                        " --block-size " + std::to_string(block_size),
                    dir);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return read_value(r.out, "loss");
}

// One line on stderr, naming `file`, and a non-zero exit.
void check_clean_failure(const RunResult& r, const std::string& file) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("error") != std::string::npos);
  CHECK(r.err.find(file) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

}  // namespace

TEST_CASE("lmforge eval matches an independent PyTorch GPT-2 on the same tokens") {
  TempDir tmp("lmf_cli_eval_");
  const fs::path ckpt = tmp.path / "ckpt";
  lmf::io::save_gpt(*random_gpt(), ckpt);
  const fs::path shard = tmp.path / "val.bin";
  // 5 full windows of 64 plus 17 tokens: the partial window is dropped, by both sides.
  lmf::data::write_shard(shard.string(), random_tokens(64 * 5 + 17, 300, 5),
                         lmf::data::TokenWidth::u16);

  RunResult ours = run_eval("--checkpoint " + quote(ckpt.string()) + " --data " +
                                quote(shard.string()) + " --batch-size 2 --json",
                            tmp.path);
  INFO(ours.err);
  REQUIRE(ours.exit_code == 0);
  auto result = nlohmann::json::parse(ours.out);
  const double loss = result.at("loss").get<double>();
  CHECK(result.at("tokens") == 64 * 5);
  CHECK(result.at("perplexity").get<double>() == Approx(std::exp(loss)).epsilon(1e-12));
  // Random weights of this scale give a loss well above uniform: the model is not near trivial.
  CHECK(loss > std::log(300.0));

  // Text output carries the same number.
  RunResult text = run_eval("--checkpoint " + quote(ckpt.string()) + " --data " +
                                quote(shard.string()),
                            tmp.path);
  REQUIRE(text.exit_code == 0);
  CHECK(read_value(text.out, "loss") == Approx(loss).epsilon(1e-6));
  CHECK(read_value(text.out, "perplexity") == Approx(std::exp(loss)).epsilon(1e-6));

  std::string reason;
  if (!reference_python_available(reason)) {
    WARN("skipping the PyTorch comparison: " << reason);
    return;
  }
  const double reference = reference_loss(ckpt, shard, 64, tmp.path);
  INFO(std::setprecision(10) << "lmforge " << loss << " vs PyTorch " << reference);
  CHECK(std::abs(loss - reference) <= 1e-5 * std::abs(reference));

  // A shorter window changes which tokens see which context; both sides must agree again.
  RunResult short_windows = run_eval("--checkpoint " + quote(ckpt.string()) + " --data " +
                                         quote(shard.string()) + " --block-size 24 --json",
                                     tmp.path);
  REQUIRE(short_windows.exit_code == 0);
  const double short_loss = nlohmann::json::parse(short_windows.out).at("loss").get<double>();
  const double short_reference = reference_loss(ckpt, shard, 24, tmp.path);
  INFO(std::setprecision(10) << "block 24: lmforge " << short_loss << " vs PyTorch " << short_reference);
  CHECK(std::abs(short_loss - short_reference) <= 1e-5 * std::abs(short_reference));
}

// A chat shard's loss mask, written byte by byte from docs/formats.md (not by lmforge's writer):
// 256 int32 of header (magic, version, count low, count high), then one flag byte per token.
static void write_mask(const fs::path& path, const std::vector<uint8_t>& flags) {
  std::vector<int32_t> header(256, 0);
  header[0] = 20261213;
  header[1] = 1;
  header[2] = static_cast<int32_t>(flags.size());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  out.write(reinterpret_cast<const char*>(flags.data()), static_cast<std::streamsize>(flags.size()));
}

TEST_CASE("lmforge eval on a chat shard follows conversations and scores assistant replies with --loss assistant") {
  TempDir tmp("lmf_cli_eval_");
  const fs::path ckpt = tmp.path / "ckpt";
  lmf::io::save_gpt(*random_gpt(), ckpt);
  const fs::path shard = tmp.path / "chat.bin";
  const std::size_t n = 400;
  lmf::data::write_shard(shard.string(), random_tokens(n, 300, 8), lmf::data::TokenWidth::u16);
  // Conversations of 37, 1 (too short for a target), 112 (several windows of 24), 50 and the rest;
  // about half of the tokens are assistant targets.
  std::vector<uint8_t> flags(n, 0);
  std::mt19937 rng(4);
  for (auto& f : flags) f = (rng() & 1) ? 1 : 0;
  for (std::size_t start : {0, 37, 38, 150, 200}) flags[start] = 2;  // a start is never a target
  write_mask(shard.string() + ".mask", flags);

  auto ours = [&](const std::string& loss) {
    RunResult r = run_eval("--checkpoint " + quote(ckpt.string()) + " --data " + quote(shard.string()) +
                               " --block-size 24 --batch-size 3 --json --loss " + loss,
                           tmp.path);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(r.out);
  };
  const auto all = ours("all"), assistant = ours("assistant");
  // Every token but the first of each of the five conversations is a target.
  CHECK(all.at("tokens") == n - 5);
  std::size_t trained = 0;
  for (std::size_t i = 1; i < n; ++i) trained += (flags[i] & 1) && !(flags[i] & 2);
  CHECK(assistant.at("tokens") == trained);
  CHECK(assistant.at("loss").get<double>() != all.at("loss").get<double>());

  std::string reason;
  if (!reference_python_available(reason)) {
    WARN("skipping the PyTorch comparison: " << reason);
    return;
  }
  for (const auto* loss : {"all", "assistant"}) {
    const std::string script = std::string(LMF_SOURCE_DIR) + "/tests/reference/eval_reference.py";
    RunResult r = run("/usr/bin/python3 " + quote(script) + " --checkpoint " + quote(ckpt.string()) + " --data " +
                          quote(shard.string()) + " --block-size 24 --mask " + quote(shard.string() + ".mask") +
                          " --loss " + loss,
                      tmp.path);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const double reference = read_value(r.out, "loss");
    const double value = (std::string(loss) == "all" ? all : assistant).at("loss").get<double>();
    INFO(std::setprecision(10) << loss << ": lmforge " << value << " vs PyTorch " << reference);
    CHECK(std::abs(value - reference) <= 1e-5 * std::abs(reference));
  }
}

TEST_CASE("lmforge eval reads transformer.-prefixed checkpoints with a tied lm_head") {
  TempDir tmp("lmf_cli_eval_");
  const fs::path ckpt = tmp.path / "ckpt";
  lmf::io::save_gpt(*random_gpt(), ckpt);
  const fs::path shard = tmp.path / "val.bin";
  lmf::data::write_shard(shard.string(), random_tokens(200, 300, 9), lmf::data::TokenWidth::u16);

  const fs::path hf = tmp.path / "hf";
  fs::create_directories(hf);
  fs::copy_file(ckpt / "config.json", hf / "config.json");
  auto file = lmf::io::read_safetensors(ckpt / "model.safetensors");
  lmf::io::NamedTensors renamed;
  for (const auto& [name, t] : file.tensors) renamed.emplace_back("transformer." + name, t);
  renamed.emplace_back("lm_head.weight", file.tensors.at("wte.weight"));
  renamed.emplace_back("transformer.h.0.attn.bias", Tensor::ones({1, 1, 64, 64}));
  lmf::io::write_safetensors(hf / "model.safetensors", renamed, {{"format", "pt"}});

  const std::string args = " --data " + quote(shard.string()) + " --json";
  RunResult plain = run_eval("--checkpoint " + quote(ckpt.string()) + args, tmp.path);
  RunResult prefixed = run_eval("--checkpoint " + quote(hf.string()) + args, tmp.path);
  INFO(plain.err << prefixed.err);
  REQUIRE(plain.exit_code == 0);
  REQUIRE(prefixed.exit_code == 0);
  CHECK(nlohmann::json::parse(plain.out).at("loss") == nlohmann::json::parse(prefixed.out).at("loss"));

  std::string reason;
  if (reference_python_available(reason)) {
    const double reference = reference_loss(hf, shard, 64, tmp.path);
    const double loss = nlohmann::json::parse(prefixed.out).at("loss").get<double>();
    CHECK(std::abs(loss - reference) <= 1e-5 * std::abs(reference));
  }
}

TEST_CASE("lmforge eval --max-batches limits the tokens evaluated") {
  TempDir tmp("lmf_cli_eval_");
  const fs::path ckpt = tmp.path / "ckpt";
  lmf::io::save_gpt(*random_gpt(), ckpt);
  const fs::path shard = tmp.path / "val.bin";
  lmf::data::write_shard(shard.string(), random_tokens(1000, 300, 4), lmf::data::TokenWidth::u16);
  RunResult r = run_eval("--checkpoint " + quote(ckpt.string()) + " --data " +
                             quote(shard.string()) + " --block-size 16 --batch-size 3 --max-batches 2 --json",
                         tmp.path);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out).at("tokens") == 2 * 3 * 16);
}

TEST_CASE("lmforge eval fails cleanly on bad checkpoints, shards and options") {
  TempDir tmp("lmf_cli_eval_");
  const fs::path ckpt = tmp.path / "ckpt";
  lmf::io::save_gpt(*random_gpt(), ckpt);
  const fs::path shard = tmp.path / "val.bin";
  lmf::data::write_shard(shard.string(), random_tokens(300, 300, 1), lmf::data::TokenWidth::u16);
  const std::string good_data = " --data " + quote(shard.string());
  const std::string good_ckpt = "--checkpoint " + quote(ckpt.string());

  SECTION("truncated model.safetensors") {
    const fs::path model = ckpt / "model.safetensors";
    fs::resize_file(model, fs::file_size(model) / 2);
    check_clean_failure(run_eval(good_ckpt + good_data, tmp.path), model.string());
  }
  SECTION("model.safetensors with a garbage header") {
    const fs::path model = ckpt / "model.safetensors";
    std::string bytes = slurp(model);
    bytes[12] = '#';  // inside the JSON header
    std::ofstream(model, std::ios::binary) << bytes;
    check_clean_failure(run_eval(good_ckpt + good_data, tmp.path), model.string());
  }
  SECTION("config.json missing a key") {
    const fs::path config = ckpt / "config.json";
    auto j = nlohmann::json::parse(slurp(config));
    j.erase("n_head");
    std::ofstream(config) << j.dump();
    RunResult r = run_eval(good_ckpt + good_data, tmp.path);
    check_clean_failure(r, config.string());
    CHECK(r.err.find("n_head") != std::string::npos);
  }
  SECTION("truncated shard") {
    fs::resize_file(shard, fs::file_size(shard) - 7);
    check_clean_failure(run_eval(good_ckpt + good_data, tmp.path), shard.string());
  }
  SECTION("a file that is not a shard") {
    std::ofstream(shard, std::ios::binary) << std::string(2048, 'x');
    check_clean_failure(run_eval(good_ckpt + good_data, tmp.path), shard.string());
  }
  SECTION("token ids beyond the vocabulary") {
    auto ids = random_tokens(300, 300, 1);
    ids[150] = 300;
    lmf::data::write_shard(shard.string(), ids, lmf::data::TokenWidth::u16);
    RunResult r = run_eval(good_ckpt + good_data, tmp.path);
    check_clean_failure(r, shard.string());
    CHECK(r.err.find("300") != std::string::npos);
    CHECK(r.err.find("vocab") != std::string::npos);
  }
  SECTION("--loss assistant on a shard without a loss mask") {
    RunResult r = run_eval(good_ckpt + good_data + " --loss assistant", tmp.path);
    check_clean_failure(r, shard.string() + ".mask");
  }
  SECTION("--loss of an unknown kind") {
    RunResult r = run_eval(good_ckpt + good_data + " --loss everything", tmp.path);
    check_clean_failure(r, "--loss");
  }
  SECTION("shard shorter than one window") {
    lmf::data::write_shard(shard.string(), random_tokens(64, 300, 1), lmf::data::TokenWidth::u16);
    check_clean_failure(run_eval(good_ckpt + good_data, tmp.path), shard.string());
  }
  SECTION("block size beyond the model's context") {
    RunResult r = run_eval(good_ckpt + good_data + " --block-size 65", tmp.path);
    check_clean_failure(r, ckpt.string());
    CHECK(r.err.find("65") != std::string::npos);
  }
  SECTION("missing checkpoint directory") {
    check_clean_failure(run_eval("--checkpoint " + quote((tmp.path / "nope").string()) + good_data,
                                 tmp.path),
                        (tmp.path / "nope").string());
  }
}
