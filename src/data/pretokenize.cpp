// Hand-written matcher for GPT-2's pre-tokenization pattern (see pretokenize.h). It follows the
// regex's alternation order and its one piece of backtracking (\s+(?!\S) gives back the last
// whitespace character when a non-space follows) exactly, so pieces equal tiktoken's.
#include "data/pretokenize.h"

#include <algorithm>
#include <cstdint>

#include "data/unicode_tables.h"

namespace lmf::data {

UnicodeClass unicode_class(uint32_t code_point) {
  const UnicodeRange* begin = kUnicodeRanges;
  const UnicodeRange* end = kUnicodeRanges + kUnicodeRangeCount;
  const UnicodeRange* it = std::upper_bound(
      begin, end, code_point, [](uint32_t cp, const UnicodeRange& r) { return cp < r.first; });
  if (it == begin) return kOther;
  --it;
  return code_point <= it->last ? it->cls : kOther;
}

namespace {

struct AsciiTable {
  UnicodeClass cls[128];
  AsciiTable() {
    for (uint32_t c = 0; c < 128; ++c) cls[c] = unicode_class(c);
  }
};
const AsciiTable kAscii;

struct Char {
  UnicodeClass cls;
  uint32_t length;  // bytes
};

// Decodes the character at `pos`. Invalid or truncated UTF-8 yields a one-byte "other" character.
inline Char char_at(std::string_view text, std::size_t pos) {
  auto b0 = static_cast<unsigned char>(text[pos]);
  if (b0 < 0x80) return {kAscii.cls[b0], 1};
  std::size_t left = text.size() - pos;
  auto cont = [&](std::size_t i) {
    return i < left && (static_cast<unsigned char>(text[pos + i]) & 0xC0) == 0x80;
  };
  auto byte = [&](std::size_t i) { return static_cast<uint32_t>(text[pos + i]) & 0x3F; };
  uint32_t cp;
  uint32_t length;
  if (b0 >= 0xC2 && b0 <= 0xDF && cont(1)) {
    cp = ((b0 & 0x1Fu) << 6) | byte(1);
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF && cont(1) && cont(2)) {
    cp = ((b0 & 0x0Fu) << 12) | (byte(1) << 6) | byte(2);
    if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return {kOther, 1};
    length = 3;
  } else if (b0 >= 0xF0 && b0 <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    cp = ((b0 & 0x07u) << 18) | (byte(1) << 12) | (byte(2) << 6) | byte(3);
    if (cp < 0x10000 || cp > 0x10FFFF) return {kOther, 1};
    length = 4;
  } else {
    return {kOther, 1};
  }
  return {unicode_class(cp), length};
}

bool is_contraction(std::string_view text, std::size_t pos, std::size_t* length) {
  std::size_t left = text.size() - pos;
  if (left < 2 || text[pos] != '\'') return false;
  char c1 = text[pos + 1];
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
    *length = 2;
    return true;
  }
  if (left >= 3) {
    char c2 = text[pos + 2];
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
      *length = 3;
      return true;
    }
  }
  return false;
}

// End of the run of characters of class `cls` starting at `pos`.
inline std::size_t run_end(std::string_view text, std::size_t pos, UnicodeClass cls) {
  while (pos < text.size()) {
    Char c = char_at(text, pos);
    if (c.cls != cls) break;
    pos += c.length;
  }
  return pos;
}

}  // namespace

std::size_t pretoken_length(std::string_view text, std::size_t pos) {
  std::size_t n = text.size();
  std::size_t contraction = 0;
  if (is_contraction(text, pos, &contraction)) return contraction;
  Char first = char_at(text, pos);
  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional U+0020 then a run of one class.
  if (text[pos] == ' ' && pos + 1 < n) {
    Char next = char_at(text, pos + 1);
    if (next.cls != kSpace) return run_end(text, pos + 1, next.cls) - pos;
  }
  if (first.cls != kSpace) return run_end(text, pos, first.cls) - pos;
  // "\s+(?!\S)" then "\s+": a whitespace run, minus its last character when a non-space follows.
  std::size_t end = pos;
  std::size_t last_start = pos;
  while (end < n) {
    Char c = char_at(text, end);
    if (c.cls != kSpace) break;
    last_start = end;
    end += c.length;
  }
  if (end == n || last_start == pos) return end - pos;
  return last_start - pos;
}

namespace {

inline bool is_space_at(std::string_view text, std::size_t pos) {
  return char_at(text, pos).cls == kSpace;
}

inline bool is_ascii_non_space(char c) {
  auto b = static_cast<unsigned char>(c);
  return b < 0x80 && kAscii.cls[b] != kSpace;
}

inline bool is_char_start(std::string_view text, std::size_t pos) {
  return pos >= text.size() || (static_cast<unsigned char>(text[pos]) & 0xC0) != 0x80;
}

}  // namespace

std::size_t safe_split_point(std::string_view text, std::size_t lower, std::size_t target) {
  target = std::min(target, text.size());
  if (target >= text.size()) return text.size();
  // Best: just after a lone '\n' (a non-space before it, a non-space after it). The newline is then
  // a piece of its own whether or not the text continues, and the next piece starts fresh.
  for (std::size_t p = target; p >= lower + 2 && p + 64 * 1024 > target; --p) {
    if (text[p - 1] == '\n' && is_ascii_non_space(text[p - 2]) && is_char_start(text, p) &&
        !is_space_at(text, p)) {
      return p;
    }
  }
  // Next best: before a single space between two non-spaces (" word" starts a piece).
  for (std::size_t p = target; p >= lower + 1 && p + 1 < text.size(); --p) {
    if (text[p] == ' ' && is_ascii_non_space(text[p - 1]) && !is_space_at(text, p + 1)) {
      return p;
    }
    if (p + 64 * 1024 < target) break;
  }
  std::size_t p = target;
  while (p > lower && !is_char_start(text, p)) --p;
  return p;
}

}  // namespace lmf::data
