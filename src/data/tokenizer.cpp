// CharTokenizer and ByteLevelBPE (encode, decode, JSON save/load, GPT-2 file import) and
// load_tokenizer. BPE encoding caches the ids of recent pre-tokens per thread because natural text
// repeats a small set of words; the cache is what makes encoding run at many MB/s.
#include "lmforge/data/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <queue>
#include <tuple>
#include <unordered_map>

#include "data/bpe_merge.h"
#include "data/byte_level.h"
#include "data/file_util.h"
#include "data/hf_tokenizer.h"
#include "data/pretokenize.h"
#include "data/utf8.h"
#include "io/safe_file.h"
#include "io/untrusted_json.h"
#include "lmforge/core/error.h"

namespace lmf::data {

using nlohmann::json;
namespace fs = std::filesystem;

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace {

std::vector<uint32_t> utf8_code_points(std::string_view text, const std::string& what) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    std::size_t length;
    LMF_CHECK(decode_utf8(text, pos, &cp, &length), what, ": invalid UTF-8 at byte offset ", pos);
    out.push_back(cp);
    pos += length;
  }
  return out;
}

std::string utf8_of(uint32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

// Finds the earliest special-token spelling in text[from:]; returns npos when there is none.
std::size_t find_special(std::string_view text, std::size_t from,
                         const std::map<std::string, int32_t>& special, int32_t* id,
                         std::size_t* length) {
  std::size_t best = std::string_view::npos;
  for (const auto& [name, token] : special) {
    std::size_t at = text.find(name, from);
    if (at < best || (at == best && at != std::string_view::npos && name.size() > *length)) {
      best = at;
      *id = token;
      *length = name.size();
    }
  }
  return best;
}

// Tokenizer files are a few megabytes (GPT-2's vocabulary and merges); this bounds a hostile one.
constexpr std::uint64_t kMaxTokenizerFileBytes = 256ull << 20;

json read_json(const std::string& path) {
  const std::string shown = str("'", io::clip(path), "'");
  return io::parse_untrusted_json(io::read_regular_file(path, kMaxTokenizerFileBytes, shown), shown);
}

template <class T>
T json_get(const json& object, const char* key, const std::string& path) {
  LMF_CHECK(object.is_object() && object.contains(key), "'", io::clip(path), "': missing key '", key, "'");
  try {
    return object.at(key).get<T>();
  } catch (const json::exception&) {
    // The library's text names its own types, not the file's meaning; say which key it was.
    throw Error(str("'", io::clip(path), "': key '", key, "' has the wrong type (or a value out of range)"));
  }
}

}  // namespace

int32_t Tokenizer::eot_id() const {
  auto it = special_tokens().find(kEndOfText);
  return it == special_tokens().end() ? -1 : it->second;
}

// ---- CharTokenizer ------------------------------------------------------------------------------

CharTokenizer::CharTokenizer(std::vector<uint32_t> code_points,
                             const std::vector<std::string>& special_tokens)
    : code_points_(std::move(code_points)), ascii_ids_(128, -1) {
  std::sort(code_points_.begin(), code_points_.end());
  code_points_.erase(std::unique(code_points_.begin(), code_points_.end()), code_points_.end());
  for (uint32_t cp : code_points_) {
    LMF_CHECK(cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF), "invalid code point ", cp,
              " in a character vocabulary");
  }
  for (std::size_t i = 0; i < code_points_.size() && code_points_[i] < 128; ++i) {
    ascii_ids_[code_points_[i]] = static_cast<int32_t>(i);
  }
  for (const auto& name : special_tokens) {
    LMF_CHECK(!name.empty(), "empty special token name");
    if (special_.count(name) == 0) {
      special_[name] = static_cast<int32_t>(code_points_.size() + special_.size());
    }
  }
}

CharTokenizer CharTokenizer::from_text(std::string_view text,
                                       const std::vector<std::string>& special_tokens) {
  return CharTokenizer(utf8_code_points(text, "text"), special_tokens);
}

int64_t CharTokenizer::vocab_size() const {
  return static_cast<int64_t>(code_points_.size() + special_.size());
}

std::vector<int32_t> CharTokenizer::encode(std::string_view text, bool allow_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (allow_special && !special_.empty() && text[pos] == '<') {
      int32_t id = -1;
      std::size_t length = 0;
      for (const auto& [name, token] : special_) {
        if (name.size() > length && text.compare(pos, name.size(), name) == 0) {
          id = token;
          length = name.size();
        }
      }
      if (length > 0) {
        out.push_back(id);
        pos += length;
        continue;
      }
    }
    auto b0 = static_cast<unsigned char>(text[pos]);
    if (b0 < 0x80 && ascii_ids_[b0] >= 0) {
      out.push_back(ascii_ids_[b0]);
      ++pos;
      continue;
    }
    uint32_t cp;
    std::size_t length;
    LMF_CHECK(decode_utf8(text, pos, &cp, &length), "invalid UTF-8 at byte offset ", pos);
    auto it = std::lower_bound(code_points_.begin(), code_points_.end(), cp);
    if (it == code_points_.end() || *it != cp) {
      char hex[16];
      std::snprintf(hex, sizeof(hex), "U+%04X", cp);
      throw Error(str("character ", hex, " ('", utf8_of(cp), "') at byte offset ", pos,
                      " is not in the character vocabulary (", code_points_.size(),
                      " characters)"));
    }
    out.push_back(static_cast<int32_t>(it - code_points_.begin()));
    pos += length;
  }
  return out;
}

std::string CharTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    if (id >= 0 && static_cast<std::size_t>(id) < code_points_.size()) {
      append_utf8(out, code_points_[id]);
      continue;
    }
    bool found = false;
    for (const auto& [name, token] : special_) {
      if (token == id) {
        out += name;
        found = true;
        break;
      }
    }
    LMF_CHECK(found, "token id ", id, " at position ", i, " is out of range (vocab size ",
              vocab_size(), ")");
  }
  return out;
}

void CharTokenizer::save(const std::string& path) const {
  json vocab = json::array();
  for (uint32_t cp : code_points_) vocab.push_back(utf8_of(cp));
  json doc = {{"format", "lmforge-tokenizer"},
              {"version", 1},
              {"type", "char"},
              {"vocab", vocab},
              {"special_tokens", special_}};
  write_file_atomic(path, doc.dump(1) + "\n");
}

// ---- ByteLevelBPE -------------------------------------------------------------------------------

std::vector<uint32_t> gpt2_byte_to_code_point() {
  // Printable Latin-1 bytes map to themselves; the rest go to 256, 257, ... in byte order.
  std::vector<uint32_t> table(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    table[b] = printable ? b : next++;
  }
  return table;
}

namespace {

std::atomic<uint64_t> next_instance{1};

struct PieceHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Per-thread cache of piece -> ids. Keyed by the tokenizer instance so two tokenizers never
// share entries; cleared when it grows too large so memory stays bounded on huge corpora.
struct PieceCache {
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<int32_t>, PieceHash, std::equal_to<>> entries;
};
thread_local PieceCache piece_cache;
constexpr std::size_t kMaxCacheEntries = 1 << 18;
constexpr std::size_t kMaxCachedPiece = 64;

}  // namespace

struct ByteLevelBPE::Impl {
  BpeMergeMap merges;
  // A piece that is a token as a whole is that token (tiktoken's shortcut; most words are).
  std::unordered_map<std::string, int32_t, PieceHash, std::equal_to<>> whole;
  int32_t byte_ids[256];
  uint64_t instance = next_instance.fetch_add(1);
};

ByteLevelBPE::ByteLevelBPE(std::vector<std::string> token_bytes,
                           std::vector<std::pair<int32_t, int32_t>> merges,
                           std::map<std::string, int32_t> special_tokens)
    : token_bytes_(std::move(token_bytes)),
      merges_(std::move(merges)),
      special_(std::move(special_tokens)),
      impl_(std::make_unique<Impl>()) {
  const auto n = static_cast<int64_t>(token_bytes_.size());
  for (const auto& [name, id] : special_) {
    LMF_CHECK(id >= 0 && id < n, "special token '", name, "' has id ", id,
              " outside the vocabulary of ", n);
    LMF_CHECK(token_bytes_[id] == name, "special token '", name, "' does not match token ", id);
  }
  std::unordered_map<std::string, int32_t> id_of;
  id_of.reserve(token_bytes_.size());
  std::vector<bool> is_special(token_bytes_.size(), false);
  for (const auto& [name, id] : special_) is_special[id] = true;
  for (int32_t id = 0; id < n; ++id) {
    if (!is_special[id]) id_of.emplace(token_bytes_[id], id);
  }
  impl_->whole.insert(id_of.begin(), id_of.end());
  for (int b = 0; b < 256; ++b) {
    auto it = id_of.find(std::string(1, static_cast<char>(b)));
    LMF_CHECK(it != id_of.end(), "byte-level BPE vocabulary lacks the token for byte ", b);
    impl_->byte_ids[b] = it->second;
  }
  impl_->merges.reserve(merges_.size() * 2);
  for (std::size_t rank = 0; rank < merges_.size(); ++rank) {
    auto [a, b] = merges_[rank];
    LMF_CHECK(a >= 0 && a < n && b >= 0 && b < n, "merge ", rank, " refers to an id outside the ",
              "vocabulary of ", n);
    auto it = id_of.find(token_bytes_[a] + token_bytes_[b]);
    LMF_CHECK(it != id_of.end(), "merge ", rank, " produces a token missing from the vocabulary");
    // The first (lowest) rank of a pair wins, as in GPT-2's encoder.
    impl_->merges.emplace(bpe_pair_key(a, b), BpeMergeInfo{static_cast<int32_t>(rank), it->second});
  }
}

ByteLevelBPE::~ByteLevelBPE() = default;

int64_t ByteLevelBPE::vocab_size() const { return static_cast<int64_t>(token_bytes_.size()); }

void ByteLevelBPE::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  std::size_t n = piece.size();
  if (n == 1) {
    out.push_back(impl_->byte_ids[static_cast<unsigned char>(piece[0])]);
    return;
  }
  if (auto it = impl_->whole.find(piece); it != impl_->whole.end()) {
    out.push_back(it->second);
    return;
  }
  std::vector<int32_t> ids(n);
  for (std::size_t i = 0; i < n; ++i)
    ids[i] = impl_->byte_ids[static_cast<unsigned char>(piece[i])];
  bpe_merge(ids, impl_->merges);
  out.insert(out.end(), ids.begin(), ids.end());
}

void ByteLevelBPE::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  PieceCache& cache = piece_cache;
  if (cache.owner != impl_->instance) {
    cache.entries.clear();
    cache.owner = impl_->instance;
  }
  pretokenize(text, [&](std::string_view piece) {
    if (piece.size() > kMaxCachedPiece) {
      encode_piece(piece, out);
      return;
    }
    auto it = cache.entries.find(piece);
    if (it != cache.entries.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
    std::size_t start = out.size();
    encode_piece(piece, out);
    if (cache.entries.size() >= kMaxCacheEntries) cache.entries.clear();
    cache.entries.emplace(std::string(piece), std::vector<int32_t>(out.begin() + start, out.end()));
  });
}

std::vector<int32_t> ByteLevelBPE::encode(std::string_view text, bool allow_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  if (!allow_special || special_.empty()) {
    encode_append(text, out);
    return out;
  }
  std::size_t pos = 0;
  while (pos < text.size()) {
    int32_t id = -1;
    std::size_t length = 0;
    std::size_t at = find_special(text, pos, special_, &id, &length);
    if (at == std::string_view::npos) at = text.size();
    encode_append(text.substr(pos, at - pos), out);
    if (at == text.size()) break;
    out.push_back(id);
    pos = at + length;
  }
  return out;
}

std::string ByteLevelBPE::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  out.reserve(ids.size() * 4);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    LMF_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " at position ", i,
              " is out of range (vocab size ", vocab_size(), ")");
    out += token_bytes_[id];
  }
  return out;
}

std::string bytes_to_gpt2_string(const std::string& bytes, const std::vector<uint32_t>& table) {
  std::string out;
  for (unsigned char b : bytes) append_utf8(out, table[b]);
  return out;
}

// Inverse of bytes_to_gpt2_string; returns false if a character is not in GPT-2's byte table.
bool gpt2_string_to_bytes(const std::string& text, const std::unordered_map<uint32_t, int>& inverse,
                          std::string* bytes) {
  bytes->clear();
  for (std::size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    std::size_t length;
    if (!decode_utf8(text, pos, &cp, &length)) return false;
    auto it = inverse.find(cp);
    if (it == inverse.end()) return false;
    *bytes += static_cast<char>(it->second);
    pos += length;
  }
  return true;
}

std::unordered_map<uint32_t, int> gpt2_code_point_to_byte() {
  auto table = gpt2_byte_to_code_point();
  std::unordered_map<uint32_t, int> inverse;
  for (int b = 0; b < 256; ++b) inverse[table[b]] = b;
  return inverse;
}

namespace {

bool is_special_spelling(const std::string& s) {
  return s.size() > 4 && s.compare(0, 2, "<|") == 0 && s.compare(s.size() - 2, 2, "|>") == 0;
}

}  // namespace

void ByteLevelBPE::save(const std::string& path) const {
  auto table = gpt2_byte_to_code_point();
  json vocab = json::array();
  std::vector<bool> is_special(token_bytes_.size(), false);
  for (const auto& [name, id] : special_) is_special[id] = true;
  for (std::size_t id = 0; id < token_bytes_.size(); ++id) {
    vocab.push_back(is_special[id] ? token_bytes_[id]
                                   : bytes_to_gpt2_string(token_bytes_[id], table));
  }
  json merges = json::array();
  for (auto [a, b] : merges_) merges.push_back({a, b});
  json doc = {{"format", "lmforge-tokenizer"}, {"version", 1},   {"type", "byte_bpe"},
              {"pretokenizer", "gpt2"},        {"vocab", vocab}, {"merges", merges},
              {"special_tokens", special_}};
  write_file_atomic(path, doc.dump() + "\n");
}

std::unique_ptr<ByteLevelBPE> ByteLevelBPE::from_gpt2_directory(const std::string& dir) {
  fs::path vocab_path, merges_path;
  if (fs::exists(fs::path(dir) / "vocab.json") && fs::exists(fs::path(dir) / "merges.txt")) {
    vocab_path = fs::path(dir) / "vocab.json";
    merges_path = fs::path(dir) / "merges.txt";
  } else if (fs::exists(fs::path(dir) / "encoder.json") &&
             fs::exists(fs::path(dir) / "vocab.bpe")) {
    vocab_path = fs::path(dir) / "encoder.json";
    merges_path = fs::path(dir) / "vocab.bpe";
  } else {
    throw Error(
        str("'", dir, "' holds neither vocab.json + merges.txt nor encoder.json + ", "vocab.bpe"));
  }
  json vocab = read_json(vocab_path.string());
  LMF_CHECK(vocab.is_object(), "'", vocab_path.string(), "' is not a JSON object");
  auto inverse = gpt2_code_point_to_byte();
  std::vector<std::string> token_bytes(vocab.size());
  std::vector<bool> seen(vocab.size(), false);
  std::map<std::string, int32_t> special;
  std::unordered_map<std::string, int32_t> id_of_string;
  for (const auto& [text, value] : vocab.items()) {
    LMF_CHECK(value.is_number_integer(), "'", vocab_path.string(), "': id of '", text,
              "' is not an integer");
    int64_t id = value.get<int64_t>();
    LMF_CHECK(id >= 0 && id < static_cast<int64_t>(vocab.size()) && !seen[id], "'",
              vocab_path.string(), "': id ", id, " of '", text, "' is out of range or repeated");
    seen[id] = true;
    id_of_string[text] = static_cast<int32_t>(id);
    if (is_special_spelling(text)) {
      special[text] = static_cast<int32_t>(id);
      token_bytes[id] = text;
    } else {
      LMF_CHECK(gpt2_string_to_bytes(text, inverse, &token_bytes[id]), "'", vocab_path.string(),
                "': token '", text, "' uses characters outside GPT-2's byte table");
    }
  }
  std::string merges_text = read_file(merges_path.string());
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::size_t line_start = 0;
  int64_t line_number = 0;
  while (line_start < merges_text.size()) {
    std::size_t line_end = merges_text.find('\n', line_start);
    if (line_end == std::string::npos) line_end = merges_text.size();
    std::string line = merges_text.substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    std::size_t space = line.find(' ');
    LMF_CHECK(space != std::string::npos && line.find(' ', space + 1) == std::string::npos, "'",
              merges_path.string(), "' line ", line_number, ": expected two tokens");
    auto a = id_of_string.find(line.substr(0, space));
    auto b = id_of_string.find(line.substr(space + 1));
    LMF_CHECK(a != id_of_string.end() && b != id_of_string.end(), "'", merges_path.string(),
              "' line ", line_number, ": token not in ", vocab_path.filename().string());
    merges.emplace_back(a->second, b->second);
  }
  try {
    return std::make_unique<ByteLevelBPE>(std::move(token_bytes), std::move(merges),
                                          std::move(special));
  } catch (const Error& e) {
    throw Error(str("'", dir, "': ", e.what()));
  }
}

// ---- loading ------------------------------------------------------------------------------------

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  LMF_CHECK(spec != "char", "the 'char' tokenizer is learned from a corpus by 'lmforge prepare'; ",
            "elsewhere pass a tokenizer JSON file (e.g. the tokenizer.json that prepare wrote)");
  std::error_code ec;
  LMF_CHECK(fs::exists(spec, ec), "tokenizer '", spec, "' does not exist (expected 'char', a ",
            "tokenizer JSON file, a directory with a Hugging Face tokenizer.json, or a directory ",
            "with GPT-2's vocab.json + merges.txt)");
  if (fs::is_directory(spec, ec)) {
    // A Hugging Face tokenizer.json (with its sibling tokenizer_config.json) or lmforge's own,
    // as a checkpoint or a prepared dataset holds it: the file decides which.
    const fs::path file = fs::path(spec) / "tokenizer.json";
    if (fs::exists(file)) return load_tokenizer(file.string());
    return ByteLevelBPE::from_gpt2_directory(spec);
  }
  std::string text = read_file(spec);
  json doc;
  try {
    doc = io::parse_untrusted_json(text, spec);  // nesting bounded before anything is built
  } catch (const json::exception& e) {
    throw Error(str("'", spec, "' is not valid JSON: ", e.what()));
  }
  // A Hugging Face tokenizer.json: a "model" object and no lmforge format tag.
  if (doc.is_object() && !doc.contains("format") && doc.contains("model")) {
    return hf_tokenizer_from_json(doc, std::move(text), spec, hf_sibling_config(spec));
  }
  LMF_CHECK(doc.is_object() && doc.value("format", "") == "lmforge-tokenizer", "'", spec,
            "' is not an lmforge tokenizer file (no \"format\": \"lmforge-tokenizer\") and not a ",
            "Hugging Face tokenizer.json (no \"model\")");
  LMF_CHECK(json_get<int>(doc, "version", spec) == 1, "'", spec, "': unsupported version");
  auto type = json_get<std::string>(doc, "type", spec);
  auto vocab = json_get<std::vector<std::string>>(doc, "vocab", spec);
  std::map<std::string, int32_t> special;
  if (doc.contains("special_tokens")) {
    special = json_get<std::map<std::string, int32_t>>(doc, "special_tokens", spec);
  }
  try {
    if (type == "char") {
      std::vector<uint32_t> code_points;
      for (std::size_t i = 0; i < vocab.size(); ++i) {
        auto cps = utf8_code_points(vocab[i], str("vocab entry ", i));
        LMF_CHECK(cps.size() == 1, "vocab entry ", i, " is not one character");
        code_points.push_back(cps[0]);
      }
      // Strictly increasing: a repeated symbol would be merged away and shift every later id.
      for (std::size_t i = 1; i < code_points.size(); ++i)
        LMF_CHECK(code_points[i - 1] < code_points[i], "vocab entry ", i,
                  code_points[i - 1] == code_points[i] ? " repeats the previous symbol"
                                                       : " is not in code point order");
      std::vector<std::pair<int32_t, std::string>> by_id;
      for (const auto& [name, id] : special) {
        const auto cps = utf8_code_points(name, "special token name");
        LMF_CHECK(!(cps.size() == 1 && std::binary_search(code_points.begin(), code_points.end(), cps[0])),
                  "special token '", io::clip(name), "' is also a vocabulary symbol");
        by_id.emplace_back(id, name);
      }
      std::sort(by_id.begin(), by_id.end());
      std::vector<std::string> names;
      for (std::size_t i = 0; i < by_id.size(); ++i) {
        LMF_CHECK(by_id[i].first == static_cast<int32_t>(vocab.size() + i), "special token '",
                  by_id[i].second, "' must have id ", vocab.size() + i);
        names.push_back(by_id[i].second);
      }
      return std::make_unique<CharTokenizer>(std::move(code_points), names);
    }
    if (type == "byte_bpe") {
      auto inverse = gpt2_code_point_to_byte();
      std::vector<std::string> token_bytes(vocab.size());
      std::vector<bool> is_special(vocab.size(), false);
      for (const auto& [name, id] : special) {
        LMF_CHECK(id >= 0 && static_cast<std::size_t>(id) < vocab.size(), "special token '", name,
                  "' has id ", id, " outside the vocabulary");
        is_special[id] = true;
      }
      for (std::size_t id = 0; id < vocab.size(); ++id) {
        if (is_special[id]) {
          token_bytes[id] = vocab[id];
        } else {
          LMF_CHECK(gpt2_string_to_bytes(vocab[id], inverse, &token_bytes[id]), "vocab entry ", id,
                    " uses characters outside GPT-2's byte table");
        }
      }
      auto merges = json_get<std::vector<std::pair<int32_t, int32_t>>>(doc, "merges", spec);
      return std::make_unique<ByteLevelBPE>(std::move(token_bytes), std::move(merges),
                                            std::move(special));
    }
  } catch (const Error& e) {
    throw Error(str("'", io::clip(spec), "': ", e.what()));
  }
  throw Error(str("'", io::clip(spec), "': unknown tokenizer type '", io::clip(type), "' (expected char or byte_bpe)"));
}

}  // namespace lmf::data
