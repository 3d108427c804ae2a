// prepare_dataset and list_documents: chunked, multi-threaded tokenization must equal encoding each
// document part whole; per-document train/val splits; <|endoftext|> placement; fortunes-like
// folders (binary indexes, symlink duplicates, hidden files) and meta.json checksums.
#include <catch2/catch.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/gpt2_files.h"
#include "lmforge/core/error.h"
#include "lmforge/data/prepare.h"
#include "lmforge/data/shard.h"
#include "lmforge/data/tokenizer.h"

using namespace lmf::data;
namespace fs = std::filesystem;
using lmf_test::read_text;
using lmf_test::write_text;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path dir = fs::path(LMF_BINARY_DIR) / "test-data" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string document(int lines, uint32_t seed) {
  static const char* words[] = {"Lorem", "ipsum", "dolor",  "sit", "amet,",
                                "it's",  "naïve", "한국어", "😀",   "42",
                                "  ",    "\n",    "x++;",   "(a)", "don't"};
  std::string text;
  uint32_t state = seed;
  for (int l = 0; l < lines; ++l) {
    for (int w = 0; w < 7; ++w) {
      state = state * 1664525u + 1013904223u;
      text += words[(state >> 16) % 15];
      text += ' ';
    }
    text += (l % 5 == 0) ? "\n\n" : "\n";
  }
  return text;
}

std::size_t split_of(const std::string& text, double val_fraction) {
  auto split = static_cast<std::size_t>(static_cast<double>(text.size()) * (1.0 - val_fraction));
  while (split > 0 && (static_cast<unsigned char>(text[split]) & 0xC0) == 0x80) --split;
  return split;
}

}  // namespace

TEST_CASE("list_documents skips binary indexes, symlink duplicates and hidden files", "[prepare]") {
  fs::path dir = temp_dir("prepare_list");
  fs::create_directories(dir / "topics" / "sub");
  fs::create_directories(dir / "topics" / ".git");
  write_text((dir / "topics" / "art").string(), "A picture\n%\nAnother\n");
  write_text((dir / "topics" / "art.dat").string(), std::string("\x02\x00\x00\x00\x05", 5));
  fs::create_symlink("art", dir / "topics" / "art.u8");
  write_text((dir / "topics" / "sub" / "zen").string(), "Koan\n");
  write_text((dir / "topics" / ".hidden").string(), "no\n");
  write_text((dir / "topics" / ".git" / "HEAD").string(), "no\n");
  std::vector<std::string> skipped;
  auto docs = list_documents({(dir / "topics").string()}, &skipped);
  REQUIRE(docs.size() == 2);
  CHECK(fs::path(docs[0]).filename() == "art");
  CHECK(fs::path(docs[1]).filename() == "zen");
  CHECK(skipped.size() == 2);
  CHECK_THROWS_WITH(list_documents({(dir / "missing").string()}), Catch::Contains("missing"));
}

TEST_CASE("chunked parallel prepare equals encoding each document part whole", "[prepare]") {
  fs::path dir = temp_dir("prepare_chunks");
  fs::create_directories(dir / "corpus");
  std::vector<std::string> texts = {document(900, 1), document(50, 2), document(1500, 3)};
  for (std::size_t i = 0; i < texts.size(); ++i) {
    write_text((dir / "corpus" / ("doc" + std::to_string(i) + ".txt")).string(), texts[i]);
  }
  // A trained tokenizer (always available) and GPT-2's (when npm is reachable).
  std::vector<std::string> specs;
  {
    PretokenCounts counts;
    for (const auto& t : texts) counts.add_text(t);
    BpeTrainOptions options;
    options.vocab_size = 400;
    train_bpe(counts, options)->save((dir / "trained.json").string());
    specs.push_back((dir / "trained.json").string());
  }
  if (!lmf_test::gpt2_encoder_dir().empty()) specs.push_back(lmf_test::gpt2_encoder_dir());

  for (const auto& spec : specs) {
    auto tok = load_tokenizer(spec);
    std::vector<int32_t> train_expected, val_expected;
    for (const auto& t : texts) {
      std::size_t split = split_of(t, 0.25);
      train_expected.push_back(tok->eot_id());
      auto a = tok->encode(t.substr(0, split));
      train_expected.insert(train_expected.end(), a.begin(), a.end());
      val_expected.push_back(tok->eot_id());
      auto b = tok->encode(t.substr(split));
      val_expected.insert(val_expected.end(), b.begin(), b.end());
    }
    PrepareOptions o;
    o.inputs = {(dir / "corpus").string()};
    o.out_dir = (dir / "out").string();
    o.tokenizer = spec;
    o.val_fraction = 0.25;
    o.eot = true;
    o.threads = 2;
    o.chunk_bytes = 512;  // many chunks per document
    o.progress = false;
    PrepareResult result = prepare_dataset(o);
    CHECK(Shard((dir / "out" / "train.bin").string()).read_all() == train_expected);
    CHECK(Shard((dir / "out" / "val.bin").string()).read_all() == val_expected);
    CHECK(result.train_tokens == static_cast<int64_t>(train_expected.size()));
    CHECK(result.vocab_size == tok->vocab_size());
    auto saved = load_tokenizer((dir / "out" / "tokenizer.json").string());
    CHECK(saved->encode(texts[0]) == tok->encode(texts[0]));
  }
}

TEST_CASE("prepare with char learns the corpus characters and records checksums", "[prepare]") {
  fs::path dir = temp_dir("prepare_char");
  write_text((dir / "abc.txt").string(), "abc");
  write_text((dir / "hello.txt").string(), "hello, 한국");
  PrepareOptions o;
  o.inputs = {(dir / "abc.txt").string(), (dir / "hello.txt").string()};
  o.out_dir = (dir / "out").string();
  o.val_fraction = 0.0;
  o.progress = false;
  PrepareResult result = prepare_dataset(o);
  // Characters: ' ' , a b c e h l o 국 한 -> 11 in code point order.
  CHECK(result.vocab_size == 11);
  CHECK(Shard((dir / "out" / "train.bin").string()).read_all() ==
        std::vector<int32_t>{2, 3, 4, 6, 5, 7, 7, 8, 1, 0, 10, 9});
  CHECK(Shard((dir / "out" / "val.bin").string()).size() == 0);
  auto meta = nlohmann::json::parse(read_text((dir / "out" / "meta.json").string()));
  // sha256("abc"), the FIPS 180-2 test vector.
  CHECK(meta["sources"][0]["sha256"] ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(meta["sources"][1]["bytes"] == 13);
  CHECK(meta["token_dtype"] == "u16");
  CHECK(meta["eot_id"] == -1);
}

TEST_CASE("prepare rejects what it cannot use, before writing outputs", "[prepare]") {
  fs::path dir = temp_dir("prepare_errors");
  write_text((dir / "bad.txt").string(), "ok \xff\xfe not utf-8");
  PrepareOptions o;
  o.inputs = {(dir / "bad.txt").string()};
  o.out_dir = (dir / "out").string();
  o.progress = false;
  CHECK_THROWS_WITH(prepare_dataset(o), Catch::Contains("bad.txt") && Catch::Contains("offset 3"));
  CHECK(!fs::exists(dir / "out" / "train.bin"));
  write_text((dir / "ok.txt").string(), "fine text");
  o.inputs = {(dir / "ok.txt").string()};
  o.val_fraction = 1.0;
  CHECK_THROWS_AS(prepare_dataset(o), lmf::Error);
  o.val_fraction = 0.1;
  o.eot = true;
  CharTokenizer({'a'}).save((dir / "noeot.json").string());
  o.tokenizer = (dir / "noeot.json").string();
  CHECK_THROWS_WITH(prepare_dataset(o), Catch::Contains("<|endoftext|>"));
}
