// HFTokenizer: Hugging Face tokenizer.json BPE tokenizers. The file's pipeline (added tokens ->
// normalizer -> pre-tokenizer -> BPE model -> decoder) is compiled at load into a few small step
// lists; regex pre-tokenizers run on PCRE2 (JIT, UTF + UCP), normalization on utf8proc. Words are
// cached per thread as in ByteLevelBPE, since natural text repeats a small set of words.
#include "data/hf_tokenizer.h"

#include "io/untrusted_json.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <unordered_map>
#include <unordered_set>

#include "data/bpe_merge.h"
#include "data/byte_level.h"
#include "data/file_util.h"
#include "data/pretokenize.h"
#include "data/utf8.h"
#include "lmforge/core/error.h"

namespace lmf::data {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The Split patterns of Llama 3 and of Qwen2/2.5/3 (which takes digits one at a time). Text in
// printable ASCII is split by hand for them (ascii_split_match), everything else by PCRE2.
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwenPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kSentencePieceSpace = "\xE2\x96\x81";  // ▁

// The last UTF-8 character of `s` (its last byte when that is not valid UTF-8).
std::string last_character(std::string_view s) {
  if (s.empty()) return "";
  std::size_t p = s.size() - 1;
  while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80 && s.size() - p < 4) --p;
  uint32_t cp;
  std::size_t n;
  if (decode_utf8(s, p, &cp, &n) && p + n == s.size()) return std::string(s.substr(p));
  return std::string(s.substr(s.size() - 1));
}

struct ViewHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using IdMap = std::unordered_map<std::string, int32_t, ViewHash, std::equal_to<>>;

enum class NormKind { kUnicode, kReplace, kPrepend };
struct NormStep {
  NormKind kind;
  int utf8proc_options = 0;  // kUnicode
  std::string from, to;      // kReplace: from -> to; kPrepend: to
};

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
enum class PreKind { kSplit, kByteLevel, kMetaspace };
enum class Prepend { kAlways, kFirst, kNever };

struct Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

struct PreStep {
  PreKind kind;
  // kSplit
  std::shared_ptr<Regex> regex;  // null: `literal` is the pattern
  int fast_digits = 0;           // Llama 3 (3) or Qwen2/3 (1) pattern: ASCII text split by hand
  std::string literal;
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  // kByteLevel
  bool add_prefix_space = false;
  bool use_regex = false;
  // kMetaspace
  std::string replacement;
  Prepend prepend = Prepend::kAlways;
  bool split = true;
};

enum class DecKind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, lstrip, rstrip;
};

// A byte trie of added-token spellings, for leftmost-longest matching.
struct TrieNode {
  std::vector<std::pair<uint8_t, int32_t>> kids;
  int32_t token = -1;  // index into added tokens
};

// Pieces are short (a word, a few bytes): a multiply-mix over 8-byte words hashes them in a few
// cycles, where std::hash<string_view> calls out to a general byte hash.
struct PieceHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
    std::size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
      h ^= h >> 29;
    }
    uint64_t tail = 0;
    if (i < s.size()) std::memcpy(&tail, s.data() + i, s.size() - i);
    h = (h ^ tail) * 0x94D049BB133111EBull;
    return static_cast<std::size_t>(h ^ (h >> 31));
  }
};

// Open addressing over two arenas: a lookup reads one slot and then the key bytes, which sit
// in first-seen (text) order, instead of chasing a bucket, a node and a heap string.
struct PieceCache {
  struct Slot {
    uint64_t hash = 0;  // 0: empty
    uint32_t key_at = 0, ids_at = 0;
    uint16_t key_size = 0, ids_size = 0;
  };
  uint64_t owner = 0;
  std::vector<Slot> slots = std::vector<Slot>(1 << 12);
  std::size_t used = 0;
  std::string keys;
  std::vector<int32_t> ids;

  static uint64_t hash_of(std::string_view s) { return PieceHash{}(s) | 1; }

  // The cached ids of `word`, or false.
  bool find(std::string_view word, uint64_t h, std::vector<int32_t>& out) const {
    const std::size_t mask = slots.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots[i];
      if (s.hash == 0) return false;
      if (s.hash == h && s.key_size == word.size() &&
          std::memcmp(keys.data() + s.key_at, word.data(), word.size()) == 0) {
        out.insert(out.end(), ids.begin() + s.ids_at, ids.begin() + s.ids_at + s.ids_size);
        return true;
      }
    }
  }

  void insert(std::string_view word, uint64_t h, const int32_t* first, std::size_t count) {
    if (count > UINT16_MAX) return;
    if (used >= kMaxEntries || keys.size() + word.size() > UINT32_MAX || ids.size() + count > UINT32_MAX) clear();
    if (2 * (used + 1) > slots.size()) grow();
    const std::size_t mask = slots.size() - 1;
    std::size_t i = h & mask;
    while (slots[i].hash != 0) i = (i + 1) & mask;
    slots[i] = {h, static_cast<uint32_t>(keys.size()), static_cast<uint32_t>(ids.size()),
                static_cast<uint16_t>(word.size()), static_cast<uint16_t>(count)};
    keys.append(word);
    ids.insert(ids.end(), first, first + count);
    ++used;
  }

  void clear() {
    std::fill(slots.begin(), slots.end(), Slot{});
    used = 0;
    keys.clear();
    ids.clear();
  }

 private:
  static constexpr std::size_t kMaxEntries = 1 << 18;  // bounded memory on huge corpora

  void grow() {
    std::vector<Slot> old(slots.size() * 2);
    old.swap(slots);
    const std::size_t mask = slots.size() - 1;
    for (const Slot& s : old) {
      if (s.hash == 0) continue;
      std::size_t i = s.hash & mask;
      while (slots[i].hash != 0) i = (i + 1) & mask;
      slots[i] = s;
    }
  }
};
// A few caches per thread, one per tokenizer instance, so encoding with two tokenizers in turn
// (a model's and a reference one, or a benchmark) does not empty the cache at every switch.
PieceCache& piece_cache_for(uint64_t instance) {
  thread_local std::array<PieceCache, 4> caches;
  thread_local std::size_t next_slot = 0;
  for (PieceCache& c : caches) {
    if (c.owner == instance) return c;
  }
  PieceCache& c = caches[next_slot++ % caches.size()];
  c.clear();
  c.owner = instance;
  return c;
}
std::atomic<uint64_t> hf_next_instance{1};
constexpr std::size_t kMaxCachedPiece = 64;

std::string describe(const json& node);

std::string describe_list(const json& list) {
  std::string s;
  for (const auto& item : list) s += (s.empty() ? "" : ", ") + describe(item);
  return "Sequence[" + s + "]";
}

std::string describe(const json& node) {
  if (node.is_null()) return "none";
  std::string type = node.value("type", "?");
  if (type == "Sequence") {
    for (const char* key : {"normalizers", "pretokenizers", "decoders"}) {
      if (node.contains(key)) return describe_list(node[key]);
    }
  }
  if (type == "Split") {
    bool regex = node.contains("pattern") && node["pattern"].contains("Regex");
    return str("Split(", regex ? "regex" : "string", ", ", node.value("behavior", "?"), ")");
  }
  if (type == "ByteLevel") return node.value("use_regex", true) ? "ByteLevel(gpt2 regex)" : "ByteLevel";
  return type;
}

}  // namespace

struct HFTokenizer::Impl {
  std::string path;
  // Written back by save(). raw_chat_template is a chat_template.jinja beside tokenizer_config.json
  // (newer Hugging Face directories keep the template there instead of in the config).
  std::string raw_json, raw_config, raw_chat_template;
  bool byte_level = false;
  bool ignore_merges = false, byte_fallback = false, fuse_unk = false;
  int32_t unk_id = -1;
  int64_t vocab_size = 0;
  IdMap vocab;  // model-space spelling (bytes for byte-level vocabularies) -> id
  BpeMergeMap merges;
  // SentencePiece-style vocabularies (no pre-tokenizer: the whole text is one word) are merged in
  // chunks that start at a "▁" run. A chunk boundary before "▁" is exact when the character before
  // it is a token of its own and the last character of no merge's left side whose right side
  // starts with "▁": no merge can then ever join the two chunks.
  bool split_at_space = false;
  std::unordered_set<std::string, ViewHash, std::equal_to<>> space_joiners;
  int32_t byte_ids[256];      // byte-level: the id of each byte
  int32_t fallback_ids[256];  // <0xNN>
  std::vector<NormStep> norm;
  std::vector<PreStep> pre;
  std::vector<DecKind> dec_kinds;
  std::vector<std::string> decoded;  // id -> bytes after the per-token decoders
  std::vector<bool> has_id;
  std::string strip_content;  // Strip/Metaspace decoders: leading/trailing characters to remove
  int strip_start = 0, strip_stop = 0;
  std::vector<AddedToken> added;
  std::vector<TrieNode> trie;
  int32_t trie_root[256];
  std::map<std::string, int32_t> special, added_map;
  std::string bos, eos, norm_kind, pre_kind, dec_kind;
  int32_t bos_id = -1, eos_id = -1;
  uint64_t instance = hf_next_instance.fetch_add(1);

  void encode_segment(std::string_view seg, bool first, PieceCache& cache, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void encode_word_cached(std::string_view word, PieceCache& cache, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, PieceCache& cache, std::vector<int32_t>& out) const;
};

// ---- loading ------------------------------------------------------------------------------------

struct HFTokenizerLoader {
  const std::string& file;
  HFTokenizer::Impl& t;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(str("'", file, "': ", key, ": ", what));
  }
  const json& need(const json& node, const char* key, const std::string& where) const {
    if (!node.is_object() || !node.contains(key)) fail(where + "." + key, "missing");
    return node[key];
  }
  std::string get_string(const json& node, const char* key, const std::string& where) const {
    const json& v = need(node, key, where);
    if (!v.is_string()) fail(where + "." + key, "expected a string");
    return v.get<std::string>();
  }
  bool get_bool(const json& node, const char* key, bool fallback) const {
    return node.contains(key) && node[key].is_boolean() ? node[key].get<bool>() : fallback;
  }

  std::string string_at(const json& node, const char* key, const std::string& where) const {
    const json& v = node[key];
    if (!v.is_string()) fail(where + "." + key, "expected a string");
    return v.get<std::string>();
  }

  std::shared_ptr<Regex> compile(const std::string& pattern, const std::string& key) const {
    int err = 0;
    PCRE2_SIZE at = 0;
    auto re = std::make_shared<Regex>();
    re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, nullptr);
    if (re->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(err, message, sizeof(message));
      fail(key, str("regex '", pattern, "' does not compile at offset ", at, ": ",
                    reinterpret_cast<const char*>(message)));
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if absent
    return re;
  }

  void normalizer(const json& node, const std::string& key) {
    where_ = key;
    if (node.is_null()) return;
    std::string type = get_string(node, "type", key);
    if (type == "Sequence") {
      const json& list = need(node, "normalizers", key);
      for (std::size_t i = 0; i < list.size(); ++i) {
        normalizer(list[i], str(key, ".normalizers[", i, "]"));
      }
    } else if (type == "NFC" || type == "NFKC" || type == "NFD" || type == "NFKD") {
      int options = UTF8PROC_STABLE;
      options |= type[type.size() - 1] == 'C' ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
      if (type.size() == 4) options |= UTF8PROC_COMPAT;
      t.norm.push_back({NormKind::kUnicode, options, "", ""});
    } else if (type == "Replace") {
      const json& pattern = need(node, "pattern", key);
      if (!pattern.contains("String")) {
        fail(key + ".pattern", "only {\"String\": ...} patterns are supported for Replace");
      }
      std::string from = pattern["String"].get<std::string>();
      if (from.empty()) fail(key + ".pattern.String", "empty pattern");
      t.norm.push_back({NormKind::kReplace, 0, from, get_string(node, "content", key)});
    } else if (type == "Prepend") {
      t.norm.push_back({NormKind::kPrepend, 0, "", get_string(node, "prepend", key)});
    } else {
      fail(key + ".type", str("normalizer '", type,
                              "' is not supported (supported: NFC, NFKC, NFD, NFKD, Replace, "
                              "Prepend, Sequence)"));
    }
  }

  void pretokenizer(const json& node, const std::string& key) {
    where_ = key;
    if (node.is_null()) return;
    std::string type = get_string(node, "type", key);
    PreStep step;
    if (type == "Sequence") {
      const json& list = need(node, "pretokenizers", key);
      for (std::size_t i = 0; i < list.size(); ++i) {
        pretokenizer(list[i], str(key, ".pretokenizers[", i, "]"));
      }
      return;
    } else if (type == "Split") {
      step.kind = PreKind::kSplit;
      const json& pattern = need(node, "pattern", key);
      if (pattern.contains("Regex")) {
        const std::string regex = string_at(pattern, "Regex", key + ".pattern");
        step.regex = compile(regex, key + ".pattern.Regex");
        step.fast_digits = regex == kLlama3Pattern ? 3 : regex == kQwenPattern ? 1 : 0;
      } else if (pattern.contains("String")) {
        step.literal = pattern["String"].get<std::string>();
        if (step.literal.empty()) fail(key + ".pattern.String", "empty pattern");
      } else {
        fail(key + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
      }
      std::string behavior = get_string(node, "behavior", key);
      if (behavior == "Removed") step.behavior = Behavior::kRemoved;
      else if (behavior == "Isolated") step.behavior = Behavior::kIsolated;
      else if (behavior == "MergedWithPrevious") step.behavior = Behavior::kMergedWithPrevious;
      else if (behavior == "MergedWithNext") step.behavior = Behavior::kMergedWithNext;
      else if (behavior == "Contiguous") step.behavior = Behavior::kContiguous;
      else fail(key + ".behavior", "unknown behavior '" + behavior + "'");
      step.invert = get_bool(node, "invert", false);
    } else if (type == "Digits") {
      // Every numeric character alone (individual_digits, as SmolLM's and StarCoder's tokenizers
      // use), or runs of them; Rust's char::is_numeric is Unicode's \p{N}.
      step.kind = PreKind::kSplit;
      step.regex = compile("\\p{N}", key + ".type");
      step.behavior = get_bool(node, "individual_digits", false) ? Behavior::kIsolated : Behavior::kContiguous;
    } else if (type == "ByteLevel") {
      step.kind = PreKind::kByteLevel;
      step.add_prefix_space = get_bool(node, "add_prefix_space", true);
      step.use_regex = get_bool(node, "use_regex", true);
      t.byte_level = true;
    } else if (type == "Metaspace") {
      step.kind = PreKind::kMetaspace;
      step.replacement = node.value("replacement", "\xE2\x96\x81");
      std::string scheme = node.value("prepend_scheme", "");
      if (scheme.empty()) scheme = get_bool(node, "add_prefix_space", true) ? "always" : "never";
      if (scheme == "always") step.prepend = Prepend::kAlways;
      else if (scheme == "first") step.prepend = Prepend::kFirst;
      else if (scheme == "never") step.prepend = Prepend::kNever;
      else fail(key + ".prepend_scheme", "unknown scheme '" + scheme + "'");
      step.split = get_bool(node, "split", true);
    } else {
      fail(key + ".type", str("pre-tokenizer '", type,
                              "' is not supported (supported: Split, Digits, ByteLevel, "
                              "Metaspace, Sequence)"));
    }
    t.pre.push_back(std::move(step));
  }

  void decoder(const json& node, const std::string& key, std::vector<std::pair<DecKind, json>>& out) {
    where_ = key;
    if (node.is_null()) return;
    std::string type = get_string(node, "type", key);
    if (type == "Sequence") {
      const json& list = need(node, "decoders", key);
      for (std::size_t i = 0; i < list.size(); ++i) {
        decoder(list[i], str(key, ".decoders[", i, "]"), out);
      }
    } else if (type == "ByteLevel") {
      out.emplace_back(DecKind::kByteLevel, node);
    } else if (type == "Replace") {
      const json& pattern = need(node, "pattern", key);
      if (!pattern.contains("String")) {
        fail(key + ".pattern", "only {\"String\": ...} patterns are supported for Replace");
      }
      get_string(node, "content", key);
      out.emplace_back(DecKind::kReplace, node);
    } else if (type == "ByteFallback") {
      out.emplace_back(DecKind::kByteFallback, node);
    } else if (type == "Fuse") {
      out.emplace_back(DecKind::kFuse, node);
    } else if (type == "Strip") {
      t.strip_content = get_string(node, "content", key);
      t.strip_start = node.value("start", 0);
      t.strip_stop = node.value("stop", 0);
      out.emplace_back(DecKind::kStrip, node);
    } else if (type == "Metaspace") {
      std::string scheme = node.value("prepend_scheme", "");
      if (scheme.empty()) scheme = get_bool(node, "add_prefix_space", true) ? "always" : "never";
      if (scheme != "never") {
        t.strip_content = " ";
        t.strip_start = 1;
      }
      out.emplace_back(DecKind::kMetaspace, node);
    } else {
      fail(key + ".type", str("decoder '", type,
                              "' is not supported (supported: ByteLevel, Replace, ByteFallback, "
                              "Fuse, Strip, Metaspace, Sequence)"));
    }
  }

  // The token's text after the per-token decoders (everything but the sequence-level strip).
  std::string decode_token(const std::string& spelling,
                           const std::vector<std::pair<DecKind, json>>& decoders,
                           const std::unordered_map<uint32_t, int>& inverse) const {
    std::string s = spelling;
    for (const auto& [kind, node] : decoders) {
      if (kind == DecKind::kByteLevel) {
        std::string bytes;
        if (gpt2_string_to_bytes(s, inverse, &bytes)) s = bytes;
      } else if (kind == DecKind::kReplace || kind == DecKind::kMetaspace) {
        std::string from = kind == DecKind::kReplace ? node["pattern"]["String"].get<std::string>()
                                                     : node.value("replacement", "\xE2\x96\x81");
        std::string to = kind == DecKind::kReplace ? node["content"].get<std::string>() : " ";
        std::string r;
        for (std::size_t pos = 0;;) {
          std::size_t at = from.empty() ? std::string::npos : s.find(from, pos);
          r.append(s, pos, at == std::string::npos ? std::string::npos : at - pos);
          if (at == std::string::npos) break;
          r += to;
          pos = at + from.size();
        }
        s = r;
      } else if (kind == DecKind::kByteFallback) {
        auto hex = [](char c) {
          return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        };
        if (s.size() == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' &&
            hex(s[3]) >= 0 && hex(s[4]) >= 0) {
          s = std::string(1, static_cast<char>(hex(s[3]) * 16 + hex(s[4])));
        }
      }
    }
    return s;
  }

  void model(const json& node) {
    where_ = "model";
    const std::string key = "model";
    std::string type = node.value("type", "BPE");
    if (type != "BPE") {
      fail("model.type", str("model '", type, "' is not supported (only BPE; WordPiece, Unigram ",
                             "and WordLevel are not)"));
    }
    if (node.contains("dropout") && !node["dropout"].is_null() &&
        node["dropout"].get<double>() != 0.0) {
      fail("model.dropout", "BPE dropout is not supported");
    }
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (node.contains(k) && node[k].is_string() && !node[k].get<std::string>().empty()) {
        fail(std::string("model.") + k, "is not supported");
      }
    }
    t.ignore_merges = get_bool(node, "ignore_merges", false);
    t.byte_fallback = get_bool(node, "byte_fallback", false);
    t.fuse_unk = get_bool(node, "fuse_unk", false);
    const json& vocab = need(node, "vocab", key);
    if (!vocab.is_object()) fail("model.vocab", "expected an object (token -> id)");
    IdMap raw;  // the file's spelling -> id, for the merges
    raw.reserve(vocab.size());
    t.vocab.reserve(vocab.size());
    auto inverse = gpt2_code_point_to_byte();
    std::vector<std::pair<int32_t, std::string>> spellings;
    spellings.reserve(vocab.size());
    for (const auto& [text, value] : vocab.items()) {
      if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
          value.get<int64_t>() >= (int64_t{1} << 31) - 1) {
        fail("model.vocab[\"" + text + "\"]", "id is not a non-negative 32-bit integer");
      }
      auto id = static_cast<int32_t>(value.get<int64_t>());
      raw.emplace(text, id);
      spellings.emplace_back(id, text);
      std::string model_space = text;
      if (t.byte_level && !gpt2_string_to_bytes(text, inverse, &model_space)) {
        fail("model.vocab[\"" + text + "\"]", "uses characters outside the ByteLevel byte table");
      }
      t.vocab.emplace(std::move(model_space), id);
      t.vocab_size = std::max<int64_t>(t.vocab_size, int64_t{id} + 1);
    }
    const json& merges = need(node, "merges", key);
    if (!merges.is_array()) fail("model.merges", "expected an array");
    t.merges.reserve(merges.size() * 2);
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const json& m = merges[rank];
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        std::size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          fail(str("model.merges[", rank, "]"), "expected \"a b\" (two tokens, one space)");
        }
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail(str("model.merges[", rank, "]"), "expected \"a b\" or [\"a\", \"b\"]");
      }
      auto ia = raw.find(a), ib = raw.find(b), ic = raw.find(a + b);
      if (ia == raw.end() || ib == raw.end() || ic == raw.end()) {
        fail(str("model.merges[", rank, "]"), str("'", a, "' + '", b, "' is not in model.vocab"));
      }
      t.merges.emplace(bpe_pair_key(ia->second, ib->second),
                       BpeMergeInfo{static_cast<int32_t>(rank), ic->second});
      if (b.rfind(kSentencePieceSpace, 0) == 0) t.space_joiners.insert(last_character(a));
    }
    t.split_at_space = !t.byte_level && !t.ignore_merges && raw.count(kSentencePieceSpace) > 0;
    for (int b = 0; b < 256; ++b) {
      auto it = t.vocab.find(std::string(1, static_cast<char>(b)));
      t.byte_ids[b] = t.byte_level && it != t.vocab.end() ? it->second : -1;
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      auto f = raw.find(name);
      t.fallback_ids[b] = f != raw.end() ? f->second : -1;
    }
    if (node.contains("unk_token") && node["unk_token"].is_string()) {
      auto it = raw.find(node["unk_token"].get<std::string>());
      if (it == raw.end()) fail("model.unk_token", "not in model.vocab");
      t.unk_id = it->second;
    }
    t.decoded.assign(static_cast<std::size_t>(t.vocab_size), "");
    t.has_id.assign(static_cast<std::size_t>(t.vocab_size), false);
    decoded_spellings_ = std::move(spellings);
  }

  void added_tokens(const json& list) {
    where_ = "added_tokens";
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string key = str("added_tokens[", i, "]");
      const json& node = list[i];
      AddedToken tok;
      tok.content = get_string(node, "content", key);
      const json& id = need(node, "id", key);
      if (!id.is_number_integer() || id.get<int64_t>() < 0) fail(key + ".id", "not an id");
      tok.id = static_cast<int32_t>(id.get<int64_t>());
      tok.special = get_bool(node, "special", false);
      tok.lstrip = get_bool(node, "lstrip", false);
      tok.rstrip = get_bool(node, "rstrip", false);
      if (get_bool(node, "single_word", false)) fail(key + ".single_word", "true is not supported");
      if (tok.content.empty()) fail(key + ".content", "empty");
      t.vocab_size = std::max<int64_t>(t.vocab_size, int64_t{tok.id} + 1);
      t.added_map[tok.content] = tok.id;
      if (tok.special) t.special[tok.content] = tok.id;
      t.added.push_back(tok);
    }
    // The trie: root children in a table (most text bytes start no added token).
    std::fill(std::begin(t.trie_root), std::end(t.trie_root), -1);
    t.trie.clear();
    for (std::size_t i = 0; i < t.added.size(); ++i) {
      const std::string& s = t.added[i].content;
      auto b0 = static_cast<uint8_t>(s[0]);
      if (t.trie_root[b0] < 0) {
        t.trie_root[b0] = static_cast<int32_t>(t.trie.size());
        t.trie.emplace_back();
      }
      int32_t node = t.trie_root[b0];
      for (std::size_t k = 1; k < s.size(); ++k) {
        auto b = static_cast<uint8_t>(s[k]);
        int32_t next = -1;
        for (auto [c, child] : t.trie[node].kids) {
          if (c == b) next = child;
        }
        if (next < 0) {
          next = static_cast<int32_t>(t.trie.size());
          t.trie[node].kids.emplace_back(b, next);
          t.trie.emplace_back();
        }
        node = next;
      }
      t.trie[node].token = static_cast<int32_t>(i);
    }
  }

  // bos_token / eos_token: a string, null, or {"content": ...}.
  void config(const json& doc, const std::string& config_path) {
    auto token = [&](const char* key, std::string* text, int32_t* id) {
      if (!doc.contains(key) || doc[key].is_null()) return;
      const json& v = doc[key];
      if (v.is_string()) {
        *text = v.get<std::string>();
      } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
        *text = v["content"].get<std::string>();
      } else {
        throw Error(str("'", config_path, "': ", key, ": expected a string or {\"content\": ...}"));
      }
      auto it = t.added_map.find(*text);
      auto v2 = t.vocab.find(*text);  // byte-level: ASCII spellings are their own bytes
      if (it != t.added_map.end()) {
        *id = it->second;
      } else if (v2 != t.vocab.end()) {
        *id = v2->second;
      }
      LMF_CHECK(*id >= 0, "'", config_path, "': ", key, " '", *text,
                "' is neither an added token nor in the vocabulary");
    };
    token("bos_token", &t.bos, &t.bos_id);
    token("eos_token", &t.eos, &t.eos_id);
  }

  void finish(const std::vector<std::pair<DecKind, json>>& decoders) {
    auto inverse = gpt2_code_point_to_byte();
    t.decoded.resize(static_cast<std::size_t>(t.vocab_size));  // added tokens may extend the vocab
    t.has_id.resize(static_cast<std::size_t>(t.vocab_size), false);
    for (const auto& [id, spelling] : decoded_spellings_) {
      t.decoded[id] = decode_token(spelling, decoders, inverse);
      t.has_id[id] = true;
    }
    for (const auto& tok : t.added) {  // added tokens pass the decoders too (Gemma's "▁▁" ones)
      t.decoded[tok.id] = decode_token(tok.content, decoders, inverse);
      t.has_id[tok.id] = true;
    }
    if (!t.byte_level) {
      bool any = false;
      for (int b = 0; b < 256; ++b) any = any || t.fallback_ids[b] >= 0;
      if (t.byte_fallback && !any) fail("model.byte_fallback", "true but the vocabulary has no <0xNN> tokens");
    }
  }

  std::vector<std::pair<int32_t, std::string>> decoded_spellings_;
  std::string where_ = "tokenizer.json";  // the part being read, for errors of JSON type

  static void build_steps(HFTokenizerLoader& load, const json& doc, const std::string& config_path);

  static std::unique_ptr<HFTokenizer> build(const json& doc, std::string raw,
                                            const std::string& path,
                                            const std::string& config_path);
};

HFTokenizer::HFTokenizer() : impl_(std::make_unique<Impl>()) {}
HFTokenizer::~HFTokenizer() = default;

std::unique_ptr<HFTokenizer> hf_tokenizer_from_json(const json& doc, std::string raw,
                                                    const std::string& path,
                                                    const std::string& config_path) {
  return HFTokenizerLoader::build(doc, std::move(raw), path, config_path);
}

std::unique_ptr<HFTokenizer> HFTokenizerLoader::build(const json& doc, std::string raw,
                                                      const std::string& path,
                                                      const std::string& config_path) {
  std::unique_ptr<HFTokenizer> tok(new HFTokenizer());
  HFTokenizer::Impl& t = *tok->impl_;
  t.path = path;
  t.raw_json = std::move(raw);
  HFTokenizerLoader load{path, t, {}};
  try {
    build_steps(load, doc, config_path);
  } catch (const json::exception& e) {
    // A value of the wrong JSON type somewhere the loader reads without its own check: name the
    // file and the part being read, never the JSON library's text alone.
    const std::string what = e.what();
    const std::size_t at = what.find("type must be");
    load.fail(load.where_, at != std::string::npos ? what.substr(at, 60) : "a value has the wrong JSON type");
  }
  return tok;
}

void HFTokenizerLoader::build_steps(HFTokenizerLoader& load, const json& doc, const std::string& config_path) {
  HFTokenizer::Impl& t = load.t;
  if (!doc.is_object() || !doc.contains("model")) load.fail("model", "missing (not a tokenizer.json)");
  // The pre-tokenizer decides whether the vocabulary is byte-level, so it is read first.
  load.pretokenizer(doc.value("pre_tokenizer", json()), "pre_tokenizer");
  load.normalizer(doc.value("normalizer", json()), "normalizer");
  load.model(doc["model"]);
  std::vector<std::pair<DecKind, json>> decoders;
  load.decoder(doc.value("decoder", json()), "decoder", decoders);
  for (const auto& d : decoders) t.dec_kinds.push_back(d.first);
  if (doc.contains("added_tokens") && doc["added_tokens"].is_array()) {
    load.added_tokens(doc["added_tokens"]);
  } else {
    load.added_tokens(json::array());
  }
  load.finish(decoders);
  t.norm_kind = describe(doc.value("normalizer", json()));
  t.pre_kind = describe(doc.value("pre_tokenizer", json()));
  t.dec_kind = describe(doc.value("decoder", json()));
  if (!config_path.empty()) {
    t.raw_config = read_file(config_path);
    json config;
    try {
      config = io::parse_untrusted_json(t.raw_config, config_path);
    } catch (const json::exception& e) {
      throw Error(str("'", config_path, "' is not valid JSON: ", e.what()));
    }
    LMF_CHECK(config.is_object(), "'", config_path, "' is not a JSON object");
    load.where_ = "tokenizer_config.json";
    load.config(config, config_path);
    const fs::path jinja = fs::path(config_path).parent_path() / "chat_template.jinja";
    if (fs::exists(jinja)) t.raw_chat_template = read_file(jinja.string());
  }
}

std::unique_ptr<HFTokenizer> HFTokenizer::from_file(const std::string& path,
                                                    const std::string& config_path) {
  std::string raw = read_file(path);
  json doc;
  try {
    doc = io::parse_untrusted_json(raw, path);
  } catch (const json::exception& e) {
    throw Error(str("'", path, "' is not valid JSON: ", e.what()));
  }
  return hf_tokenizer_from_json(doc, std::move(raw), path, config_path);
}

std::unique_ptr<HFTokenizer> HFTokenizer::from_directory(const std::string& dir) {
  fs::path file = fs::path(dir) / "tokenizer.json";
  LMF_CHECK(fs::exists(file), "'", dir, "' holds no tokenizer.json");
  fs::path config = fs::path(dir) / "tokenizer_config.json";
  return from_file(file.string(), fs::exists(config) ? config.string() : "");
}

std::string hf_sibling_config(const std::string& tokenizer_json) {
  fs::path config = fs::path(tokenizer_json).parent_path() / "tokenizer_config.json";
  return fs::exists(config) ? config.string() : "";
}

// ---- encoding -----------------------------------------------------------------------------------

namespace {

using Span = std::pair<std::size_t, std::size_t>;  // begin, end in the working buffer

// Classes of ASCII bytes under the Llama 3 / Qwen pattern. kUnsure: bytes >= 0x80 and the
// control characters, left to PCRE2 (whether they are \s, \p{L} or \p{N} is its business).
enum AsciiKind : uint8_t { kAsciiLetter, kAsciiDigit, kAsciiSpace, kAsciiNewline, kAsciiOther, kAsciiUnsure };

struct AsciiKinds {
  AsciiKind kind[256];
  AsciiKinds() {
    for (int c = 0; c < 256; ++c) {
      AsciiKind k = kAsciiUnsure;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = kAsciiLetter;
      else if (c >= '0' && c <= '9') k = kAsciiDigit;
      else if (c == ' ' || c == '\t' || c == '\f') k = kAsciiSpace;
      else if (c == '\r' || c == '\n') k = kAsciiNewline;
      else if (c > ' ' && c < 0x7F) k = kAsciiOther;
      kind[c] = k;
    }
  }
};
const AsciiKinds kAsciiKinds;

// The match of the Llama 3 (max_digits 3) or Qwen (1) pattern at `pos` in buf[0, end), decided
// from ASCII alone: false when a byte it would have to classify is kUnsure (then PCRE2 decides).
// Follows the alternation in order, as PCRE2 does, including the backtracking of \s*[\r\n]+ and
// \s+(?!\S); every character is matched by some alternative, so the match starts at `pos`.
bool ascii_split_match(std::string_view buf, std::size_t pos, std::size_t end, int max_digits,
                       std::size_t* match_end) {
  auto kind = [&](std::size_t i) { return kAsciiKinds.kind[static_cast<unsigned char>(buf[i])]; };
  const AsciiKind k0 = kind(pos);
  if (k0 == kAsciiUnsure) return false;
  // A run of letters from `from`; unsure when it stops at a byte that may continue it.
  auto letters = [&](std::size_t from) -> bool {
    std::size_t i = from;
    while (i < end && kind(i) == kAsciiLetter) ++i;
    if (i < end && kind(i) == kAsciiUnsure) return false;
    *match_end = i;
    return true;
  };
  // (?i:'s|'t|'re|'ve|'m|'ll|'d): caselessly 's' also matches U+017F, so any non-ASCII is unsure.
  if (buf[pos] == '\'' && pos + 1 < end) {
    const auto c1 = static_cast<unsigned char>(buf[pos + 1]);
    if (c1 >= 0x80) return false;
    const char l1 = static_cast<char>(c1 | 0x20);
    if (l1 == 's' || l1 == 't' || l1 == 'm' || l1 == 'd') {
      *match_end = pos + 2;
      return true;
    }
    if (pos + 2 < end && (l1 == 'r' || l1 == 'v' || l1 == 'l')) {
      const char l2 = static_cast<char>(buf[pos + 2] | 0x20);
      if (((l1 == 'r' || l1 == 'v') && l2 == 'e') || (l1 == 'l' && l2 == 'l')) {
        *match_end = pos + 3;
        return true;
      }
    }
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (k0 == kAsciiLetter) return letters(pos);
  if (k0 == kAsciiSpace || k0 == kAsciiOther) {
    if (pos + 1 < end) {
      const AsciiKind k1 = kind(pos + 1);
      if (k1 == kAsciiUnsure) return false;
      if (k1 == kAsciiLetter) return letters(pos + 1);
    }
  }
  // \p{N}{1,3} or \p{N}
  if (k0 == kAsciiDigit) {
    std::size_t i = pos + 1;
    while (i < end && i - pos < static_cast<std::size_t>(max_digits) && kind(i) == kAsciiDigit) ++i;
    if (i < end && i - pos < static_cast<std::size_t>(max_digits) && kind(i) == kAsciiUnsure) return false;
    *match_end = i;
    return true;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  const std::size_t others = buf[pos] == ' ' ? pos + 1 : pos;
  if (others < end && kind(others) == kAsciiUnsure) return false;
  if (others < end && kind(others) == kAsciiOther) {
    std::size_t i = others;
    while (i < end && kind(i) == kAsciiOther) ++i;
    if (i < end && kind(i) == kAsciiUnsure) return false;
    while (i < end && kind(i) == kAsciiNewline) ++i;
    *match_end = i;
    return true;
  }
  // Whitespace: \s*[\r\n]+ (up to the run's last newline), \s+(?!\S), \s+.
  std::size_t i = pos, last_newline = end;
  while (i < end && (kind(i) == kAsciiSpace || kind(i) == kAsciiNewline)) {
    if (kind(i) == kAsciiNewline) last_newline = i;
    ++i;
  }
  if (i < end && kind(i) == kAsciiUnsure) return false;
  if (last_newline != end) {
    *match_end = last_newline + 1;
  } else if (i == end || i - pos == 1) {
    *match_end = i;
  } else {
    *match_end = i - 1;
  }
  return true;
}

// Splits each piece at the matches of `step` following the Hugging Face behaviours.
void split_pieces(const std::string& buf, const std::vector<Span>& in, const PreStep& step,
                  std::vector<Span>& out, pcre2_match_data* md) {
  std::vector<std::pair<Span, bool>> parts;  // (span, is_delimiter)
  for (auto [begin, end] : in) {
    parts.clear();
    std::size_t pos = begin;
    std::size_t search = begin;
    while (search < end) {
      std::size_t mb, me;
      if (step.fast_digits > 0 && ascii_split_match(buf, search, end, step.fast_digits, &me)) {
        mb = search;
      } else if (step.regex) {
        int rc = pcre2_match(step.regex->code, reinterpret_cast<PCRE2_SPTR>(buf.data()), end,
                             search, 0, md, nullptr);
        if (rc < 0) break;
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        mb = ov[0];
        me = ov[1];
      } else {
        std::size_t at = std::string_view(buf).substr(0, end).find(step.literal, search);
        if (at == std::string_view::npos) break;
        mb = at;
        me = at + step.literal.size();
      }
      if (me == mb) {  // an empty match delimits nothing; step over one character
        search = mb + 1;
        while (search < end && (static_cast<unsigned char>(buf[search]) & 0xC0) == 0x80) ++search;
        continue;
      }
      if (mb > pos) parts.push_back({{pos, mb}, step.invert});
      parts.push_back({{mb, me}, !step.invert});
      pos = search = me;
    }
    if (pos < end) parts.push_back({{pos, end}, step.invert});
    switch (step.behavior) {
      case Behavior::kRemoved:
        for (auto& [s, d] : parts) {
          if (!d) out.push_back(s);
        }
        break;
      case Behavior::kIsolated:
        for (auto& [s, d] : parts) out.push_back(s);
        break;
      case Behavior::kMergedWithPrevious: {
        std::size_t first = out.size();
        bool previous = false;
        for (auto& [s, d] : parts) {
          if (d && !previous && out.size() > first) {
            out.back().second = s.second;
          } else {
            out.push_back(s);
          }
          previous = d;
        }
        break;
      }
      case Behavior::kMergedWithNext: {
        std::vector<Span> rev;
        bool previous = false;
        for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
          if (it->second && !previous && !rev.empty()) {
            rev.back().first = it->first.first;
          } else {
            rev.push_back(it->first);
          }
          previous = it->second;
        }
        out.insert(out.end(), rev.rbegin(), rev.rend());
        break;
      }
      case Behavior::kContiguous: {
        std::size_t first = out.size();
        bool previous = false;
        for (auto& [s, d] : parts) {
          if (d == previous && out.size() > first) {
            out.back().second = s.second;
          } else {
            out.push_back(s);
          }
          previous = d;
        }
        break;
      }
    }
  }
}

std::string replace_all(std::string_view s, const std::string& from, const std::string& to) {
  std::string r;
  r.reserve(s.size());
  for (std::size_t pos = 0;;) {
    std::size_t at = s.find(from, pos);
    r.append(s.substr(pos, at == std::string_view::npos ? std::string_view::npos : at - pos));
    if (at == std::string_view::npos) break;
    r += to;
    pos = at + from.size();
  }
  return r;
}

struct MatchData {
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  ~MatchData() { pcre2_match_data_free(md); }
};

}  // namespace

void HFTokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    if (auto it = vocab.find(word); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  if (byte_level) {
    for (unsigned char b : word) {
      LMF_CHECK(byte_ids[b] >= 0, "'", path, "': the vocabulary has no token for byte ",
                static_cast<int>(b));
      ids.push_back(byte_ids[b]);
    }
  } else {
    bool last_unk = false;
    for (std::size_t pos = 0; pos < word.size();) {
      uint32_t cp;
      std::size_t n;
      if (!decode_utf8(word, pos, &cp, &n)) n = 1;
      auto it = vocab.find(word.substr(pos, n));
      if (it != vocab.end()) {
        ids.push_back(it->second);
        last_unk = false;
      } else {
        bool bytes_ok = byte_fallback;
        for (std::size_t k = 0; bytes_ok && k < n; ++k) {
          bytes_ok = fallback_ids[static_cast<unsigned char>(word[pos + k])] >= 0;
        }
        if (bytes_ok) {
          for (std::size_t k = 0; k < n; ++k) {
            ids.push_back(fallback_ids[static_cast<unsigned char>(word[pos + k])]);
          }
          last_unk = false;
        } else {
          LMF_CHECK(unk_id >= 0, "'", path, "': character '", word.substr(pos, n),
                    "' is not in the vocabulary and there is no byte fallback or unk_token");
          if (!(fuse_unk && last_unk)) ids.push_back(unk_id);
          last_unk = true;
        }
      }
      pos += n;
    }
  }
  bpe_merge(ids, merges);
  out.insert(out.end(), ids.begin(), ids.end());
}

void HFTokenizer::Impl::encode_word_cached(std::string_view word, PieceCache& cache,
                                           std::vector<int32_t>& out) const {
  if (word.size() > kMaxCachedPiece) {
    encode_word(word, out);
    return;
  }
  const uint64_t h = PieceCache::hash_of(word);
  if (cache.find(word, h, out)) return;
  std::size_t start = out.size();
  encode_word(word, out);
  cache.insert(word, h, out.data() + start, out.size() - start);
}

void HFTokenizer::Impl::encode_segment(std::string_view seg, bool first, PieceCache& cache,
                                       std::vector<int32_t>& out) const {
  if (seg.empty()) return;
  std::string buf(seg);
  for (const NormStep& n : norm) {
    if (n.kind == NormKind::kUnicode) {
      // Text below U+0300 is already in every normal form (no combining marks, no decomposable
      // characters): its lead bytes are all < 0xCC.
      bool trivial = true;
      for (unsigned char c : buf) trivial = trivial && c < 0xCC;
      if (trivial) continue;
      utf8proc_uint8_t* result = nullptr;
      utf8proc_ssize_t len =
          utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(buf.data()),
                       static_cast<utf8proc_ssize_t>(buf.size()), &result,
                       static_cast<utf8proc_option_t>(n.utf8proc_options));
      LMF_CHECK(len >= 0, "'", path, "': normalizer: cannot normalize the text (",
                utf8proc_errmsg(len), ")");
      buf.assign(reinterpret_cast<const char*>(result), static_cast<std::size_t>(len));
      std::free(result);
    } else if (n.kind == NormKind::kReplace) {
      if (buf.find(n.from) != std::string::npos) buf = replace_all(buf, n.from, n.to);
    } else if (!buf.empty()) {
      buf.insert(0, n.to);
    }
  }
  if (buf.empty()) return;
  std::vector<Span> pieces{{0, buf.size()}}, next;
  thread_local MatchData match;
  for (const PreStep& step : pre) {
    next.clear();
    if (step.kind == PreKind::kSplit) {
      split_pieces(buf, pieces, step, next, match.md);
    } else if (step.kind == PreKind::kByteLevel) {
      if (step.add_prefix_space) {
        std::string nb;
        for (auto [b, e] : pieces) {
          std::size_t begin = nb.size();
          if (buf[b] != ' ') nb += ' ';
          nb.append(buf, b, e - b);
          next.push_back({begin, nb.size()});
        }
        buf = std::move(nb);
        pieces.swap(next);
        next.clear();
      }
      if (!step.use_regex) continue;
      for (auto [b, e] : pieces) {
        std::string_view view(buf.data() + b, e - b);
        std::size_t at = b;
        pretokenize(view, [&](std::string_view p) {
          next.push_back({at, at + p.size()});
          at += p.size();
        });
      }
    } else {  // Metaspace
      std::string nb;
      for (std::size_t i = 0; i < pieces.size(); ++i) {
        auto [b, e] = pieces[i];
        std::string piece = replace_all(std::string_view(buf).substr(b, e - b), " ", step.replacement);
        bool prepend = step.prepend == Prepend::kAlways || (step.prepend == Prepend::kFirst && first && i == 0);
        if (prepend && piece.rfind(step.replacement, 0) != 0) piece.insert(0, step.replacement);
        std::size_t begin = nb.size();
        nb += piece;
        if (!step.split) {
          next.push_back({begin, nb.size()});
          continue;
        }
        // Split before each replacement character (MergedWithNext).
        std::size_t start = begin;
        for (std::size_t at = nb.find(step.replacement, begin + 1); at != std::string::npos;
             at = nb.find(step.replacement, at + 1)) {
          next.push_back({start, at});
          start = at;
        }
        next.push_back({start, nb.size()});
      }
      buf = std::move(nb);
    }
    pieces.swap(next);
  }
  for (auto [b, e] : pieces) encode_piece(std::string_view(buf.data() + b, e - b), cache, out);
}

std::vector<std::string> hf_split_regex(const std::string& pattern, std::string_view text, bool fast_path) {
  PreStep step;
  step.kind = PreKind::kSplit;
  step.regex = std::make_shared<Regex>();
  int err = 0;
  PCRE2_SIZE at = 0;
  step.regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, nullptr);
  LMF_CHECK(step.regex->code != nullptr, "regex does not compile at offset ", at);
  pcre2_jit_compile(step.regex->code, PCRE2_JIT_COMPLETE);
  if (fast_path) step.fast_digits = pattern == kLlama3Pattern ? 3 : pattern == kQwenPattern ? 1 : 0;
  const std::string buf(text);
  std::vector<Span> pieces;
  MatchData match;
  split_pieces(buf, {{0, buf.size()}}, step, pieces, match.md);
  std::vector<std::string> out;
  for (auto [b, e] : pieces) out.emplace_back(buf.substr(b, e - b));
  return out;
}

void HFTokenizer::Impl::encode_piece(std::string_view piece, PieceCache& cache,
                                     std::vector<int32_t>& out) const {
  if (!split_at_space) {
    encode_word_cached(piece, cache, out);
    return;
  }
  std::size_t start = 0;
  for (std::size_t at = piece.find(kSentencePieceSpace, 1); at != std::string_view::npos;
       at = piece.find(kSentencePieceSpace, at + kSentencePieceSpace.size())) {
    if (at <= start) continue;
    const std::string before = last_character(piece.substr(start, at - start));
    if (before == kSentencePieceSpace || space_joiners.count(before) || !vocab.count(before)) continue;
    encode_word_cached(piece.substr(start, at - start), cache, out);
    start = at;
  }
  encode_word_cached(piece.substr(start), cache, out);
}

std::vector<int32_t> HFTokenizer::encode(std::string_view text, bool allow_special) const {
  const Impl& t = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  PieceCache& cache = piece_cache_for(t.instance);  // once: thread_local access is a call here
  if (!allow_special || t.added.empty()) {
    t.encode_segment(text, true, cache, out);
    return out;
  }
  auto is_ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  std::size_t seg_start = 0;
  bool first = true;
  for (std::size_t pos = 0; pos < text.size();) {
    int32_t node = t.trie_root[static_cast<uint8_t>(text[pos])];
    int32_t best = -1;
    std::size_t best_end = 0;
    for (std::size_t k = pos + 1; node >= 0; ++k) {
      if (t.trie[node].token >= 0) {
        best = t.trie[node].token;
        best_end = k;
      }
      if (k >= text.size()) break;
      int32_t child = -1;
      for (auto [c, kid] : t.trie[node].kids) {
        if (c == static_cast<uint8_t>(text[k])) child = kid;
      }
      node = child;
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = t.added[best];
    std::size_t begin = pos, end = best_end;
    if (tok.lstrip) {
      while (begin > seg_start && is_ws(text[begin - 1])) --begin;
    }
    if (tok.rstrip) {
      while (end < text.size() && is_ws(text[end])) ++end;
    }
    t.encode_segment(text.substr(seg_start, begin - seg_start), first, cache, out);
    out.push_back(tok.id);
    first = false;
    seg_start = pos = end;
  }
  t.encode_segment(text.substr(seg_start), first, cache, out);
  return out;
}

std::string HFTokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& t = *impl_;
  std::string out;
  out.reserve(ids.size() * 4);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    LMF_CHECK(id >= 0 && id < t.vocab_size && t.has_id[id], "token id ", id, " at position ", i,
              " is not in the vocabulary (vocab size ", t.vocab_size, ")");
    out += t.decoded[id];
  }
  if (!t.strip_content.empty()) {
    const std::string& c = t.strip_content;
    std::size_t begin = 0;
    for (int k = 0; k < t.strip_start && out.compare(begin, c.size(), c) == 0; ++k) begin += c.size();
    std::size_t end = out.size();
    for (int k = 0; k < t.strip_stop && end >= begin + c.size() &&
                    out.compare(end - c.size(), c.size(), c) == 0;
         ++k) {
      end -= c.size();
    }
    out = out.substr(begin, end - begin);
  }
  return out;
}

int64_t HFTokenizer::vocab_size() const { return impl_->vocab_size; }
const std::map<std::string, int32_t>& HFTokenizer::special_tokens() const { return impl_->special; }
const std::map<std::string, int32_t>& HFTokenizer::added_tokens() const { return impl_->added_map; }
const std::string& HFTokenizer::bos_token() const { return impl_->bos; }
const std::string& HFTokenizer::eos_token() const { return impl_->eos; }
int32_t HFTokenizer::bos_id() const { return impl_->bos_id; }
int32_t HFTokenizer::eos_id() const { return impl_->eos_id; }
bool HFTokenizer::byte_level() const { return impl_->byte_level; }
const std::string& HFTokenizer::normalizer_kind() const { return impl_->norm_kind; }
const std::string& HFTokenizer::pretokenizer_kind() const { return impl_->pre_kind; }
const std::string& HFTokenizer::decoder_kind() const { return impl_->dec_kind; }

int32_t HFTokenizer::eot_id() const {
  auto it = impl_->special.find(kEndOfText);
  return it != impl_->special.end() ? it->second : impl_->eos_id;
}

void HFTokenizer::save(const std::string& path) const {
  write_file_atomic(path, impl_->raw_json);
  if (!impl_->raw_config.empty()) {
    fs::path config = fs::path(path).parent_path() / "tokenizer_config.json";
    write_file_atomic(config.string(), impl_->raw_config);
  }
  if (!impl_->raw_chat_template.empty()) {
    fs::path jinja = fs::path(path).parent_path() / "chat_template.jinja";
    write_file_atomic(jinja.string(), impl_->raw_chat_template);
  }
}

}  // namespace lmf::data
