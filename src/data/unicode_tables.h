// Unicode classes needed by GPT-2's pre-tokenization pattern, as a generated range table
// (scripts/gen_unicode_tables.py) so lmforge needs no regex or ICU dependency.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lmf::data {

enum UnicodeClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

struct UnicodeRange {
  uint32_t first;
  uint32_t last;  ///< inclusive
  UnicodeClass cls;
};

extern const char kUnicodeVersion[];
extern const UnicodeRange kUnicodeRanges[];
extern const std::size_t kUnicodeRangeCount;

/// Class of a code point: binary search in the range table (callers fast-path ASCII).
UnicodeClass unicode_class(uint32_t code_point);

}  // namespace lmf::data
