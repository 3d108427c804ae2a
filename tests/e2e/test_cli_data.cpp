// The data commands driven like a user drives them: prepare (char and BPE, fortunes and generated
// text), tokenize and --decode, tokenizer train, and bad inputs, each of which must give one
// "lmforge: error: ..." line and a non-zero exit.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "data/gpt2_files.h"
#include "e2e/cli_run.h"

namespace fs = std::filesystem;
using lmf_test::read_text;
using lmf_test::write_text;
using lmf::test::quote;
using lmf::test::require_clean_error;
using lmf::test::RunResult;

namespace {

fs::path work_dir(const std::string& name) { return lmf::test::work_dir("cli", name); }

// Runs `lmforge ARGS` in a shell (stdin from `input` when given), capturing stdout and stderr.
RunResult lmforge(const fs::path& dir, const std::string& args, const std::string& input = "") {
  const fs::path in = dir / "stdin.txt";
  write_text(in.string(), input);
  return lmf::test::run(quote(LMF_CLI) + " " + args + " < " + quote(in.string()), dir);
}

std::string generated_text(int lines) {
  static const char* words[] = {"alpha", "beta", "gamma", "delta", "rho", "sigma", "tau",
                                "한국",  "😀",    "isn't", "42",    "--",  "(x)"};
  std::string text;
  uint32_t state = 17;
  for (int l = 0; l < lines; ++l) {
    for (int w = 0; w < 6; ++w) {
      state = state * 1664525u + 1013904223u;
      text += words[(state >> 16) % 13];
      text += w == 5 ? "\n" : " ";
    }
  }
  return text;
}

nlohmann::json read_json(const fs::path& path) {
  return nlohmann::json::parse(read_text(path.string()));
}

int64_t shard_count(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  int32_t header[3];
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  return header[2];
}

}  // namespace

TEST_CASE("prepare with a char tokenizer splits one file 90/10 like nanoGPT", "[e2e][data]") {
  fs::path dir = work_dir("prepare_char");
  std::string text = generated_text(400);
  // Count characters of the first 90% of bytes (the split moves back to a character start).
  std::size_t split = text.size() * 9 / 10;
  while ((static_cast<unsigned char>(text[split]) & 0xC0) == 0x80) --split;
  auto chars = [](const std::string& s) {
    return std::count_if(s.begin(), s.end(),
                         [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
  };
  write_text((dir / "input.txt").string(), text);
  RunResult run = lmforge(dir, "prepare --input '" + (dir / "input.txt").string() + "' --out '" +
                             (dir / "out").string() + "'");
  INFO(run.err);
  REQUIRE(run.exit_code == 0);
  CHECK(shard_count(dir / "out" / "train.bin") == chars(text.substr(0, split)));
  CHECK(shard_count(dir / "out" / "val.bin") == chars(text.substr(split)));
  auto meta = read_json(dir / "out" / "meta.json");
  CHECK(meta["train"]["tokens"] == chars(text.substr(0, split)));
  CHECK(meta["sources"].size() == 1);
  CHECK(meta["sources"][0]["bytes"] == text.size());
  CHECK(meta["sources"][0]["sha256"].get<std::string>().size() == 64);
  // Vocabulary: every distinct character of the generated words, space and newline.
  std::set<std::string> distinct;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t n = 1;
    while (i + n < text.size() && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80) ++n;
    distinct.insert(text.substr(i, n));
    i += n;
  }
  CHECK(meta["vocab_size"] == distinct.size());

  // The shards decode back to the two halves of the text.
  std::string tok = "--tokenizer '" + (dir / "out" / "tokenizer.json").string() + "'";
  RunResult train =
      lmforge(dir, "tokenize " + tok + " --shard '" + (dir / "out" / "train.bin").string() + "'");
  CHECK(train.exit_code == 0);
  CHECK(train.out == text.substr(0, split));
  RunResult val =
      lmforge(dir, "tokenize " + tok + " --shard '" + (dir / "out" / "val.bin").string() + "'");
  CHECK(val.out == text.substr(split));

  // tokenize: ids on one line separated by single spaces, and back.
  RunResult enc = lmforge(dir, "tokenize " + tok, "alpha 한국\n");
  REQUIRE(enc.exit_code == 0);
  CHECK(enc.out.find("  ") == std::string::npos);
  CHECK(std::count(enc.out.begin(), enc.out.end(), ' ') == 8);  // 9 characters
  RunResult dec = lmforge(dir, "tokenize --decode " + tok, enc.out);
  CHECK(dec.out == "alpha 한국\n");
}

TEST_CASE("prepare the fortunes corpus with <|endoftext|> between documents", "[e2e][data]") {
  if (!fs::exists("/usr/share/games/fortunes/computers")) {
    std::printf("SKIP: the fortunes package is not installed\n");
    return;
  }
  fs::path dir = work_dir("prepare_fortunes");
  RunResult run = lmforge(dir, "prepare --input /usr/share/games/fortunes --out '" +
                             (dir / "out").string() + "' --eot --threads 2");
  INFO(run.err);
  REQUIRE(run.exit_code == 0);
  auto meta = read_json(dir / "out" / "meta.json");
  int64_t documents = static_cast<int64_t>(meta["sources"].size());
  CHECK(documents > 10);
  for (const auto& source : meta["sources"]) {
    std::string path = source["path"];
    CHECK(path.find(".dat") == std::string::npos);
    CHECK(path.find(".u8") == std::string::npos);
  }
  CHECK(meta["eot_id"] == meta["vocab_size"].get<int>() - 1);
  // One <|endoftext|> before each document's train part and each non-empty val part.
  std::string tok = "--tokenizer '" + (dir / "out" / "tokenizer.json").string() + "'";
  RunResult train =
      lmforge(dir, "tokenize " + tok + " --shard '" + (dir / "out" / "train.bin").string() + "'");
  REQUIRE(train.exit_code == 0);
  std::size_t eots = 0;
  for (std::size_t at = train.out.find("<|endoftext|>"); at != std::string::npos;
       at = train.out.find("<|endoftext|>", at + 1)) {
    ++eots;
  }
  CHECK(static_cast<int64_t>(eots) == documents);
  CHECK(train.out.rfind("<|endoftext|>", 0) == 0);
}

TEST_CASE("tokenizer train then prepare with the trained tokenizer", "[e2e][data]") {
  fs::path dir = work_dir("train_bpe");
  std::string text = generated_text(2000);
  write_text((dir / "corpus.txt").string(), text);
  RunResult train = lmforge(dir, "tokenizer train --input '" + (dir / "corpus.txt").string() +
                               "' --vocab-size 300 --output '" + (dir / "tok.json").string() + "'");
  INFO(train.err);
  REQUIRE(train.exit_code == 0);
  CHECK(train.err.empty());  // no progress bar when stderr is not a terminal
  RunResult again =
      lmforge(dir, "tokenizer train --input '" + (dir / "corpus.txt").string() +
                       "' --vocab-size 300 --output '" + (dir / "tok2.json").string() + "'");
  CHECK(read_text((dir / "tok.json").string()) == read_text((dir / "tok2.json").string()));
  RunResult info = lmforge(dir, "tokenizer info '" + (dir / "tok.json").string() + "'");
  CHECK(info.out.find("vocab_size: 300") != std::string::npos);
  RunResult prep = lmforge(dir, "prepare --input '" + (dir / "corpus.txt").string() + "' --out '" +
                              (dir / "out").string() + "' --tokenizer '" +
                              (dir / "tok.json").string() + "' --val-fraction 0.2");
  INFO(prep.err);
  REQUIRE(prep.exit_code == 0);
  auto meta = read_json(dir / "out" / "meta.json");
  CHECK(meta["vocab_size"] == 300);
  CHECK(meta["tokenizer"]["type"] == "byte_bpe");
  RunResult enc = lmforge(dir, "tokenize --tokenizer '" + (dir / "tok.json").string() + "'", text);
  RunResult dec =
      lmforge(dir, "tokenize --decode --tokenizer '" + (dir / "tok.json").string() + "'", enc.out);
  CHECK(dec.out == text);
}

TEST_CASE("tokenize with GPT-2's files prints GPT-2's ids", "[e2e][data][gpt2]") {
  std::string gpt2 = lmf_test::gpt2_encoder_dir();
  if (gpt2.empty()) return;
  fs::path dir = work_dir("tokenize_gpt2");
  RunResult run = lmforge(dir, "tokenize --tokenizer '" + gpt2 + "'", "Hello world");
  CHECK(run.exit_code == 0);
  CHECK(run.out == "15496 995\n");
  RunResult dec = lmforge(dir, "tokenize --decode --tokenizer '" + gpt2 + "'", "15496 995 50256");
  CHECK(dec.out == "Hello world<|endoftext|>");
}

TEST_CASE("bad inputs give one clear error line and a non-zero exit", "[e2e][data]") {
  fs::path dir = work_dir("bad_inputs");
  std::string text = generated_text(50);
  write_text((dir / "ok.txt").string(), text);
  RunResult prep = lmforge(dir, "prepare --input '" + (dir / "ok.txt").string() + "' --out '" +
                              (dir / "out").string() + "'");
  REQUIRE(prep.exit_code == 0);
  std::string tok = "--tokenizer '" + (dir / "out" / "tokenizer.json").string() + "'";
  std::string train_bin = read_text((dir / "out" / "train.bin").string());

  SECTION("truncated shard") {
    write_text((dir / "cut.bin").string(), train_bin.substr(0, train_bin.size() - 7));
    require_clean_error(
        lmforge(dir, "tokenize " + tok + " --shard '" + (dir / "cut.bin").string() + "'"),
        "cut.bin' is truncated");
  }
  SECTION("wrong magic") {
    std::string bad = train_bin;
    bad[0] = 'X';
    write_text((dir / "magic.bin").string(), bad);
    require_clean_error(
        lmforge(dir, "tokenize " + tok + " --shard '" + (dir / "magic.bin").string() + "'"),
        "not a token shard");
  }
  SECTION("out-of-range id in a shard") {
    std::string bad = train_bin;
    bad[1024 + 2 * 5] = static_cast<char>(0xff);  // token 5 becomes >= 0xff > vocab size
    write_text((dir / "ids.bin").string(), bad);
    require_clean_error(
        lmforge(dir, "tokenize " + tok + " --shard '" + (dir / "ids.bin").string() + "'"),
        "at token offset 5");
  }
  SECTION("out-of-range id to decode") {
    require_clean_error(lmforge(dir, "tokenize --decode " + tok, "1 2 99999"), "99999");
    require_clean_error(lmforge(dir, "tokenize --decode " + tok, "1 two"), "'two'");
  }
  SECTION("character outside a char vocabulary") {
    require_clean_error(lmforge(dir, "tokenize " + tok, "alpha ☃"), "U+2603");
  }
  SECTION("empty input") {
    write_text((dir / "empty.txt").string(), "");
    require_clean_error(lmforge(dir, "prepare --input '" + (dir / "empty.txt").string() +
                                         "' --out '" + (dir / "o2").string() + "'"),
                        "no text");
    fs::create_directories(dir / "emptydir");
    require_clean_error(lmforge(dir, "prepare --input '" + (dir / "emptydir").string() +
                                         "' --out '" + (dir / "o3").string() + "'"),
                        "no input files");
  }
  SECTION("missing or unreadable input") {
    require_clean_error(lmforge(dir, "prepare --input '" + (dir / "nope.txt").string() +
                                         "' --out '" + (dir / "o4").string() + "'"),
                        "nope.txt' does not exist");
    fs::create_symlink(dir / "gone.txt", dir / "dangling.txt");
    require_clean_error(lmforge(dir, "prepare --input '" + (dir / "dangling.txt").string() +
                                         "' --out '" + (dir / "o5").string() + "'"),
                        "dangling.txt");
    if (geteuid() != 0) {  // root reads any file, so the permission check only runs as a user
      write_text((dir / "secret.txt").string(), "text");
      fs::permissions(dir / "secret.txt", fs::perms::none);
      require_clean_error(lmforge(dir, "prepare --input '" + (dir / "secret.txt").string() +
                                           "' --out '" + (dir / "o6").string() + "'"),
                          "secret.txt");
    }
  }
  SECTION("bad tokenizer spec and bad vocab size") {
    require_clean_error(lmforge(dir, "tokenize --tokenizer '" + (dir / "ok.txt").string() + "'"),
                        "ok.txt");
    require_clean_error(
        lmforge(dir, "tokenizer train --input '" + (dir / "ok.txt").string() +
                         "' --vocab-size 100 --output '" + (dir / "t.json").string() + "'"),
        "too small");
    require_clean_error(lmforge(dir, "prepare --input '" + (dir / "ok.txt").string() + "' --out '" +
                                         (dir / "o7").string() + "' --val-fraction 1.5"),
                        "--val-fraction");
  }
}
