// BPE training: merges worked out by hand on a tiny corpus, the incremental trainer against a
// plain recount-everything reference written here, determinism, and round trips.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "data/gpt2_files.h"
#include "lmforge/core/error.h"
#include "lmforge/data/prepare.h"
#include "lmforge/data/tokenizer.h"

using namespace lmf::data;
namespace fs = std::filesystem;

namespace {

using Merges = std::vector<std::pair<int32_t, int32_t>>;

// Reference trainer: recounts every pair of every word before each merge; ties go to the smaller
// (left, right) pair; returns the merges in order (ids: 0..255 bytes, then one per new token).
Merges reference_merges(const PretokenCounts& counts, int64_t merges_wanted) {
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
  for (const auto& [piece, count] : counts.counts()) {
    std::vector<int32_t> ids;
    for (unsigned char b : piece) ids.push_back(b);
    words.emplace_back(ids, count);
  }
  std::map<std::string, int32_t> id_of;
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) {
    bytes.emplace_back(1, static_cast<char>(b));
    id_of[bytes.back()] = b;
  }
  Merges merges;
  while (static_cast<int64_t>(bytes.size()) - 256 < merges_wanted) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pairs;
    for (const auto& [ids, count] : words) {
      for (std::size_t i = 0; i + 1 < ids.size(); ++i) pairs[{ids[i], ids[i + 1]}] += count;
    }
    if (pairs.empty()) break;
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      if (it->second > best->second) best = it;  // map order makes the first maximum the smallest
    }
    auto [a, b] = best->first;
    std::string merged = bytes[a] + bytes[b];
    int32_t id;
    if (id_of.count(merged)) {
      id = id_of[merged];
    } else {
      id = static_cast<int32_t>(bytes.size());
      bytes.push_back(merged);
      id_of[merged] = id;
    }
    merges.emplace_back(a, b);
    for (auto& [ids, count] : words) {
      std::vector<int32_t> out;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i + 1 < ids.size() && ids[i] == a && ids[i + 1] == b) {
          out.push_back(id);
          ++i;
        } else {
          out.push_back(ids[i]);
        }
      }
      ids = out;
    }
  }
  return merges;
}

std::string generated_text(int lines, uint32_t seed) {
  static const char* words[] = {"the",  "cat",   "sat",   "on",     "mat",   "and",    "then",
                                "they", "went",  "home",  "to",     "their", "mother", "who",
                                "was",  "there", "again", "한국어", "😀",     "don't",  "it's",
                                "1999", "3.14",  "!!",    "  "};
  std::string text;
  uint32_t state = seed;
  for (int l = 0; l < lines; ++l) {
    int n = 3 + static_cast<int>(state % 9);
    for (int w = 0; w < n; ++w) {
      state = state * 1664525u + 1013904223u;
      if (w > 0) text += ' ';
      text += words[(state >> 16) % (sizeof(words) / sizeof(words[0]))];
    }
    text += (state & 0x100) ? ".\n" : "\n";
  }
  return text;
}

}  // namespace

TEST_CASE("BPE training learns the merges worked out by hand", "[bpe]") {
  PretokenCounts counts;
  counts.add_text("ab ab ab cd");  // pieces: "ab" x1, " ab" x2, " cd" x1
  BpeTrainOptions options;
  options.vocab_size = 256 + 3 + 1;
  auto tok = train_bpe(counts, options);
  // (a,b)=3 first; then (" ", ab)=2; then (" ",c)=1 ties (c,d)=1 and wins as the smaller pair.
  CHECK(tok->merges() == Merges{{'a', 'b'}, {' ', 256}, {' ', 'c'}});
  CHECK(tok->vocab_size() == 260);
  CHECK(tok->eot_id() == 259);
  CHECK(tok->token_bytes()[257] == " ab");
  CHECK(tok->encode("ab ab") == std::vector<int32_t>{256, 257});
  CHECK(tok->encode(" cd") == std::vector<int32_t>{258, 'd'});
}

TEST_CASE("incremental BPE training equals a full recount per merge", "[bpe]") {
  PretokenCounts counts;
  counts.add_text(generated_text(3000, 7));
  for (int64_t merges : {10, 200}) {
    BpeTrainOptions options;
    options.vocab_size = 256 + merges + 1;
    auto tok = train_bpe(counts, options);
    CHECK(tok->merges() == reference_merges(counts, merges));
  }
}

TEST_CASE("BPE training stops when no pair is left", "[bpe]") {
  PretokenCounts counts;
  counts.add_text("abc");
  BpeTrainOptions options;
  options.vocab_size = 1000;
  auto tok = train_bpe(counts, options);
  CHECK(tok->merges().size() == 2);
  CHECK(tok->vocab_size() == 256 + 2 + 1);
  CHECK(tok->encode("abc") == std::vector<int32_t>{257});
}

TEST_CASE("BPE training rejects a vocabulary smaller than the bytes", "[bpe]") {
  PretokenCounts counts;
  counts.add_text("abc");
  BpeTrainOptions options;
  options.vocab_size = 200;
  CHECK_THROWS_AS(train_bpe(counts, options), lmf::Error);
}

TEST_CASE("trained tokenizers are deterministic and round-trip text", "[bpe]") {
  fs::path dir = fs::path(LMF_BINARY_DIR) / "test-data" / "bpe_train";
  fs::remove_all(dir);
  fs::create_directories(dir / "corpus");
  lmf_test::write_text((dir / "corpus" / "a.txt").string(), generated_text(2000, 1));
  lmf_test::write_text((dir / "corpus" / "b.txt").string(), generated_text(2000, 2));
  // Small chunks and different thread counts must not change the counts.
  PretokenCounts one = count_pretokens({(dir / "corpus").string()}, 1, false, 1 << 12);
  PretokenCounts two = count_pretokens({(dir / "corpus").string()}, 2, false, 1 << 20);
  CHECK(one.counts() == two.counts());
  BpeTrainOptions options;
  options.vocab_size = 400;
  auto first = train_bpe(one, options);
  auto second = train_bpe(two, options);
  CHECK(first->merges() == second->merges());
  first->save((dir / "tok.json").string());
  auto loaded = load_tokenizer((dir / "tok.json").string());
  std::string unseen = "Unseen text: naïve 😀 안녕 \xff\xfe bytes\n\n  the cat";
  CHECK(loaded->decode(loaded->encode(unseen)) == unseen);
  CHECK(loaded->encode(unseen) == first->encode(unseen));
  std::string seen = generated_text(50, 3);
  auto ids = loaded->encode(seen);
  CHECK(ids.size() < seen.size() / 2);  // the merges compress text like the training text
  CHECK(loaded->decode(ids) == seen);
}
