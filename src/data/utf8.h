// Strict UTF-8 decoding shared by the character tokenizer and `prepare` (which learns a
// character vocabulary and must reject invalid bytes with their offset).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lmf::data {

/// Decodes the character at `pos`; returns false for invalid, overlong, surrogate or truncated
/// sequences.
inline bool decode_utf8(std::string_view s, std::size_t pos, uint32_t* cp, std::size_t* length) {
  auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[pos + i]); };
  std::size_t left = s.size() - pos;
  unsigned char b0 = b(0);
  if (b0 < 0x80) {
    *cp = b0;
    *length = 1;
    return true;
  }
  std::size_t n = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
  if (n == 0 || n > left || b0 > 0xF4) return false;
  uint32_t value = b0 & (0x7F >> n);
  for (std::size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xC0) != 0x80) return false;
    value = (value << 6) | (b(i) & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (value < kMin[n] || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return false;
  *cp = value;
  *length = n;
  return true;
}

/// Length of the longest prefix of `s` that does not end inside a multi-byte character.
inline std::size_t complete_utf8_prefix(std::string_view s) {
  std::size_t end = s.size();
  std::size_t back = 0;
  while (back < 3 && back < end && (static_cast<unsigned char>(s[end - 1 - back]) & 0xC0) == 0x80) {
    ++back;
  }
  if (back == end) return end;
  auto lead = static_cast<unsigned char>(s[end - 1 - back]);
  std::size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  return need > back + 1 ? end - 1 - back : end;
}

}  // namespace lmf::data
