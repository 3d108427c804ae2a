// End-to-end tests of `lmforge generate`, run as a user would run the binary on a checkpoint saved
// with io::save_gpt plus a tokenizer file: the streamed text must equal what the library generates
// for the same options and seed (byte for byte, also when tokens split UTF-8 characters), and every
// bad input must give one clear error line and a non-zero exit.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "e2e/cli_run.h"
#include "e2e/tiny_checkpoint.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/generate/generate.h"
#include "lmforge/io/checkpoint.h"

namespace fs = std::filesystem;
namespace data = lmf::data;
namespace gen = lmf::generate;
using lmf::test::quote;
using lmf::test::run;
using lmf::test::RunResult;
using lmf::test::TempDir;

namespace {

RunResult run_generate(const std::string& args, const fs::path& dir) {
  return run(quote(LMF_CLI) + " generate " + args, dir);
}

const char* kCorpus = "hello world, the quick brown fox. héllo ünïcode ✓\n";

// A random GPT whose vocabulary is padded past the tokenizer's (as GPT-2's 50304 is), with a
// small context so that long generations slide the window.
fs::path save_checkpoint(const fs::path& dir, const data::Tokenizer& tokenizer) {
  return lmf::test::save_tiny_gpt_checkpoint(dir, tokenizer, 16, 11);
}

// What the library generates for the same checkpoint, prompt ids and options.
std::string expected_text(const fs::path& ckpt, const data::Tokenizer& tokenizer,
                          const std::vector<int32_t>& prompt, gen::GenerateOptions options,
                          uint64_t seed) {
  auto gpt = lmf::io::load_gpt(ckpt);
  options.vocab_limit = tokenizer.vocab_size();
  lmf::Generator g(seed);
  return tokenizer.decode(gen::generate(*gpt, prompt, options, g));
}

void check_one_error_line(const RunResult& r, const std::string& needle) {
  INFO("stderr: " << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.out.empty());
  CHECK(r.err.rfind("lmforge: error: ", 0) == 0);
  CHECK(r.err.find('\n') == r.err.size() - 1);
  CHECK(r.err.find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("generate streams the prompt and the library's greedy continuation with a char tokenizer") {
  TempDir tmp("lmf_cli_generate_");
  const auto tokenizer = data::CharTokenizer::from_text(kCorpus, {data::kEndOfText});
  const fs::path ckpt = save_checkpoint(tmp.path, tokenizer);
  gen::GenerateOptions options;
  options.max_new_tokens = 40;  // past block_size 16: the window slides
  options.sampling.temperature = 0.f;
  const std::string want = expected_text(ckpt, tokenizer, tokenizer.encode("héllo"), options, 0);

  const RunResult r = run_generate("--checkpoint " + quote(ckpt.string()) +
                                       " --prompt 'héllo' --max-new-tokens 40 --temperature 0",
                                   tmp.path);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "héllo" + want + "\n");
  CHECK(r.err.find("40 tokens") != std::string::npos);
}

TEST_CASE("generate samples deterministically for a seed, and an empty prompt starts at <|endoftext|>") {
  TempDir tmp("lmf_cli_generate_");
  const auto tokenizer = data::CharTokenizer::from_text(kCorpus, {data::kEndOfText});
  const fs::path ckpt = save_checkpoint(tmp.path, tokenizer);
  const std::string base = "--checkpoint " + quote(ckpt.string()) +
                           " --max-new-tokens 30 --temperature 1.2 --top-k 10 --top-p 0.95";
  const RunResult a = run_generate(base + " --seed 5", tmp.path);
  const RunResult b = run_generate(base + " --seed 5", tmp.path);
  const RunResult c = run_generate(base + " --seed 6", tmp.path);
  REQUIRE(a.exit_code == 0);
  CHECK(a.out == b.out);
  CHECK(a.out != c.out);

  gen::GenerateOptions options;
  options.max_new_tokens = 30;
  options.sampling = {1.2f, 10, 0.95f};
  CHECK(a.out == expected_text(ckpt, tokenizer, {tokenizer.eot_id()}, options, 5) + "\n");
}

TEST_CASE("generate prints byte-level tokens that split UTF-8 characters byte for byte") {
  TempDir tmp("lmf_cli_generate_");
  // Byte tokens only: sampled sequences cut multi-byte characters anywhere.
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
  bytes.emplace_back(data::kEndOfText);
  const data::ByteLevelBPE tokenizer(bytes, {}, {{data::kEndOfText, 256}});
  const fs::path ckpt = save_checkpoint(tmp.path, tokenizer);
  const RunResult r = run_generate("--checkpoint " + quote(ckpt.string()) +
                                       " --prompt '✓ ok' --max-new-tokens 50 --seed 3",
                                   tmp.path);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  gen::GenerateOptions options;
  options.max_new_tokens = 50;
  CHECK(r.out == "✓ ok" + expected_text(ckpt, tokenizer, tokenizer.encode("✓ ok"), options, 3) +
                     "\n");
}

TEST_CASE("generate rejects bad inputs with one clear error line") {
  TempDir tmp("lmf_cli_generate_");
  const auto tokenizer = data::CharTokenizer::from_text(kCorpus, {data::kEndOfText});
  const fs::path ckpt = save_checkpoint(tmp.path, tokenizer);
  const std::string ok = "--checkpoint " + quote(ckpt.string());

  check_one_error_line(run_generate("--checkpoint " + quote((tmp.path / "nope").string()), tmp.path),
                       "does not exist");
  check_one_error_line(run_generate(ok + " --temperature -1", tmp.path), "--temperature");
  check_one_error_line(run_generate(ok + " --top-p 0", tmp.path), "--top-p");
  check_one_error_line(run_generate(ok + " --top-p 1.5", tmp.path), "--top-p");
  check_one_error_line(run_generate(ok + " --top-k -2", tmp.path), "--top-k");
  check_one_error_line(run_generate(ok + " --prompt 'zzz'", tmp.path), "--prompt");
  check_one_error_line(run_generate(ok + " --tokenizer " + quote((tmp.path / "missing.json").string()),
                                    tmp.path),
                       "missing.json");

  fs::remove(ckpt / "tokenizer.json");
  check_one_error_line(run_generate(ok, tmp.path), "--tokenizer");
  // An explicit tokenizer file anywhere works without one in the checkpoint.
  tokenizer.save((tmp.path / "tok.json").string());
  const RunResult r = run_generate(
      ok + " --tokenizer " + quote((tmp.path / "tok.json").string()) + " --prompt 'the' --max-new-tokens 5",
      tmp.path);
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.rfind("the", 0) == 0);
}
