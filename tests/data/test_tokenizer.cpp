// Tokenizers: the character tokenizer, GPT-2's pre-tokenizer, and ByteLevelBPE against tiktoken's
// "gpt2" encoding (run through node) on varied text, plus the JSON round trip and bad files.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "data/gpt2_files.h"
#include "data/pretokenize.h"
#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"

using namespace lmf::data;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  fs::path dir = fs::path(LMF_BINARY_DIR) / "test-data" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::vector<std::string> pieces(std::string_view text) {
  std::vector<std::string> out;
  pretokenize(text, [&](std::string_view p) { out.emplace_back(p); });
  return out;
}

// Varied text: prose, code, Korean, emoji, whitespace runs, contractions, digits, odd bytes.
std::string varied_corpus() {
  std::string text;
  text +=
      "It's a truth universally acknowledged, that a single man in possession of a good "
      "fortune, must be in want of a wife. We'll see; they've said I'm sure he'd go.\n\n";
  text +=
      "#include <vector>\nint main(int argc, char** argv) {\n    std::vector<int> v{1, 2, 3};\n"
      "\treturn v.size() > 2 ? 0 : 1;  // done\n}\n";
  text += "안녕하세요, 세계! 한국어 텍스트입니다.   다음 줄\n";
  text += "Emoji: 😀😃 👍🏽 🇰🇷 ❤️ and 🤖!!\n";
  text += "Spaces:      many   \n\n\n  \t\t tabs\r\n\r\nend   ";
  text += "Digits 1234567890 3.14159 1,000,000 ٣٤٥ 二十\n";
  text += "Contractions: don't DON'T y'all 'tis rock'n'roll O'Neil's ''s 'll 're 've 'm 'd\n";
  text += "Mixed: naïve café Ångström ΑΒΓ αβγ Привет мир עברית العربية हिन्दी\n";
  text += "\u00a0nbsp\u3000ideographic\u2028line sep\u0085next line\n";
  for (int i = 0; i < 50; ++i) text += "Line " + std::to_string(i * 7919 % 1000) + " of text.\n";
  return text;
}

// Pseudo-random mix of fragments from many scripts and character classes: letters, marks,
// numbers of other scripts, Unicode spaces, information separators, apostrophes, emoji.
std::string unicode_soup(int fragments) {
  static const char* pools[] = {"abcXYZ",
                                "0123456789",
                                " ",
                                "  ",
                                "\n",
                                "\t",
                                "\r\n",
                                "'",
                                "'s",
                                "'ll",
                                "'re",
                                "'ve",
                                "'d",
                                "'m",
                                "'t",
                                "'S",
                                ".,;:!?-_()[]{}",
                                "한국어텍스트",
                                "日本語の文章",
                                "中文字符",
                                "😀👍🏽🇰🇷❤️🤖",
                                "\u00a0",
                                "\u3000",
                                "\u2028",
                                "\u0085",
                                "\u200b",
                                "\u2009",
                                "éàüñçÅ",
                                "ΑΒΓαβγ",
                                "Привет",
                                "עברית",
                                "العربية",
                                "हिन्दी",
                                "٣٤٥",
                                "Ⅻ½²",
                                "e\u0301\u0308",
                                "\x0b\x0c",
                                "\x1c\x1d\x1e\x1f",
                                "ﬁ",
                                "𝔘𝔫𝔦"};
  const int n = sizeof(pools) / sizeof(pools[0]);
  std::string text;
  uint32_t state = 12345;
  for (int i = 0; i < fragments; ++i) {
    state = state * 1664525u + 1013904223u;
    text += pools[(state >> 8) % n];
  }
  return text;
}

}  // namespace

TEST_CASE("char tokenizer vocabulary is the sorted unique code points", "[tokenizer]") {
  CharTokenizer tok = CharTokenizer::from_text("hello");
  REQUIRE(tok.vocab_size() == 4);  // e h l o
  CHECK(tok.encode("hello") == std::vector<int32_t>{1, 0, 2, 2, 3});
  CHECK(tok.decode({3, 2, 0}) == "ole");
  CHECK(tok.eot_id() == -1);
}

TEST_CASE("char tokenizer handles multi-byte characters and special tokens", "[tokenizer]") {
  std::string text = "a한😀b";
  CharTokenizer tok = CharTokenizer::from_text(text, {kEndOfText});
  REQUIRE(tok.vocab_size() == 5);
  CHECK(tok.eot_id() == 4);
  // Code point order: 'a' (0x61) < 'b' (0x62) < U+D55C < U+1F600.
  CHECK(tok.encode(text) == std::vector<int32_t>{0, 2, 3, 1});
  CHECK(tok.decode(tok.encode(text)) == text);
  CHECK(tok.encode("a<|endoftext|>b", true) == std::vector<int32_t>{0, 4, 1});
  CHECK_THROWS_AS(tok.encode("a<|endoftext|>b", false), lmf::Error);  // '<' is not in the vocab
}

TEST_CASE("char tokenizer rejects an unknown character with a clear error", "[tokenizer]") {
  CharTokenizer tok = CharTokenizer::from_text("abc");
  try {
    tok.encode("abz");
    FAIL("expected an error");
  } catch (const lmf::Error& e) {
    std::string msg = e.what();
    CHECK(msg.find("U+007A") != std::string::npos);
    CHECK(msg.find("byte offset 2") != std::string::npos);
  }
  CHECK_THROWS_AS(tok.decode({3}), lmf::Error);
  CHECK_THROWS_AS(CharTokenizer::from_text("bad \xff byte"), lmf::Error);
}

TEST_CASE("char tokenizer survives a save/load round trip", "[tokenizer]") {
  std::string dir = temp_dir("char_roundtrip");
  CharTokenizer tok = CharTokenizer::from_text("The quick brown fox, 한국어 😀\n", {kEndOfText});
  tok.save(dir + "/tok.json");
  auto loaded = load_tokenizer(dir + "/tok.json");
  CHECK(loaded->type() == "char");
  CHECK(loaded->vocab_size() == tok.vocab_size());
  CHECK(loaded->eot_id() == tok.eot_id());
  std::string text = "quick 😀 fox\n";
  CHECK(loaded->encode(text) == tok.encode(text));
  // A directory holding it as tokenizer.json (a checkpoint, a prepared dataset) loads it too.
  tok.save(dir + "/tokenizer.json");
  auto from_dir = load_tokenizer(dir);
  CHECK(from_dir->type() == "char");
  CHECK(from_dir->encode(text) == tok.encode(text));
}

TEST_CASE("pre-tokenizer splits as GPT-2's pattern does", "[tokenizer]") {
  using V = std::vector<std::string>;
  CHECK(pieces("Hello world") == V{"Hello", " world"});
  CHECK(pieces("it's we'll I'm they've we're he'd can't") == V{"it", "'s", " we", "'ll", " I", "'m",
                                                               " they", "'ve", " we", "'re", " he",
                                                               "'d", " can", "'t"});
  CHECK(pieces("DON'T") == V{"DON", "'", "T"});  // contractions are lower-case only
  CHECK(pieces("a  b") == V{"a", " ", " b"});
  CHECK(pieces("a\n\nb") == V{"a", "\n", "\n", "b"});
  CHECK(pieces("a   ") == V{"a", "   "});
  CHECK(pieces("x 123abc") == V{"x", " 123", "abc"});
  CHECK(pieces("hi!!! ?") == V{"hi", "!!!", " ?"});
  CHECK(pieces(" 한국어") == V{" 한국어"});
  CHECK(pieces("a 😀😀b") == V{"a", " 😀😀", "b"});
  CHECK(pieces("\xff\xfe") == V{"\xff\xfe"});  // invalid bytes are "other" characters
}

TEST_CASE("safe split points cut where pre-tokens would be cut anyway", "[tokenizer]") {
  std::string text = varied_corpus() + varied_corpus();
  auto whole = pieces(text);
  for (std::size_t target = 10; target < text.size(); target += 37) {
    std::size_t cut = safe_split_point(text, target / 2, target);
    auto parts = pieces(std::string_view(text).substr(0, cut));
    auto rest = pieces(std::string_view(text).substr(cut));
    parts.insert(parts.end(), rest.begin(), rest.end());
    REQUIRE(parts == whole);
  }
}

TEST_CASE("byte-level BPE equals tiktoken's gpt2 encoding", "[tokenizer][gpt2]") {
  std::string dir = lmf_test::gpt2_encoder_dir();
  if (dir.empty()) return;  // skip printed by the helper
  auto tok = load_tokenizer(dir);
  REQUIRE(tok->vocab_size() == 50257);
  CHECK(tok->eot_id() == 50256);
  // Well-known ids of GPT-2's vocabulary.
  CHECK(tok->encode("Hello world") == std::vector<int32_t>{15496, 995});

  std::string work = temp_dir("gpt2_compare");
  std::string text = varied_corpus() + unicode_soup(20000);
  if (fs::exists("/usr/share/games/fortunes/computers")) {
    text += lmf_test::read_text("/usr/share/games/fortunes/computers");
  }
  std::string path = work + "/corpus.txt";
  lmf_test::write_text(path, text);
  std::vector<int> expected = lmf_test::tiktoken_gpt2(path);
  REQUIRE(!expected.empty());
  std::vector<int32_t> ids = tok->encode(text);
  REQUIRE(ids.size() == expected.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] != expected[i]) FAIL("first difference at token " << i);
  }
  CHECK(tok->decode(ids) == text);

  // Every line on its own too (different piece boundaries at the ends).
  std::size_t start = 0;
  int lines = 0;
  while (start < text.size() && lines < 200) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start + 1);
    CHECK(tok->decode(tok->encode(line)) == line);
    start = end + 1;
    ++lines;
  }
}

TEST_CASE("GPT-2 files load as vocab.json + merges.txt and round-trip through our JSON",
          "[tokenizer][gpt2]") {
  std::string src = lmf_test::gpt2_encoder_dir();
  if (src.empty()) return;
  std::string dir = temp_dir("gpt2_hf_names");
  fs::copy_file(src + "/encoder.json", dir + "/vocab.json");
  fs::copy_file(src + "/vocab.bpe", dir + "/merges.txt");
  auto original = load_tokenizer(src);
  auto hf = load_tokenizer(dir);
  original->save(dir + "/tokenizer.json");
  auto saved = load_tokenizer(dir + "/tokenizer.json");
  std::string text = varied_corpus();
  auto ids = original->encode(text);
  CHECK(hf->encode(text) == ids);
  CHECK(saved->encode(text) == ids);
  CHECK(saved->vocab_size() == 50257);
  CHECK(saved->encode("a<|endoftext|>b", true) == std::vector<int32_t>{64, 50256, 65});
  CHECK(saved->encode("a<|endoftext|>b", false).size() > 3);
}

TEST_CASE("load_tokenizer reports bad specs clearly", "[tokenizer]") {
  std::string dir = temp_dir("bad_tokenizers");
  CHECK_THROWS_WITH(load_tokenizer(dir + "/missing.json"), Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(load_tokenizer("char"), Catch::Contains("learned"));
  lmf_test::write_text(dir + "/bad.json", "{not json");
  CHECK_THROWS_WITH(load_tokenizer(dir + "/bad.json"), Catch::Contains("not valid JSON"));
  lmf_test::write_text(dir + "/other.json", "{\"hello\": 1}");
  CHECK_THROWS_WITH(load_tokenizer(dir + "/other.json"),
                    Catch::Contains("not an lmforge tokenizer"));
  lmf_test::write_text(dir + "/bpe.json",
                       "{\"format\":\"lmforge-tokenizer\",\"version\":1,\"type\":\"byte_bpe\","
                       "\"vocab\":[\"a\"],\"merges\":[]}");
  CHECK_THROWS_WITH(load_tokenizer(dir + "/bpe.json"), Catch::Contains("byte"));
  CHECK_THROWS_WITH(load_tokenizer(dir), Catch::Contains("neither"));
}
