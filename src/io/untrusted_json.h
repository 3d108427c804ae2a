// JSON read from files lmforge did not write (safetensors headers, config.json, tokenizer files,
// metrics lines): nesting depth is bounded before the library builds or walks anything, and values
// repeated in messages are printed short.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace lmf::io {

/// Deepest nesting of arrays and objects accepted; real files need fewer than ten levels.
inline constexpr int kMaxJsonDepth = 64;

/// The depth of the deepest array/object nesting in `text`, stopping early once it passes
/// `limit` (a linear scan that knows strings and escapes; it does not validate).
int json_nesting_depth(std::string_view text, int limit = kMaxJsonDepth);

/// Parses `text`; throws lmf::Error "<where>: ..." when it is nested deeper than kMaxJsonDepth or
/// is not valid JSON (the library's own message is not repeated).
nlohmann::json parse_untrusted_json(std::string_view text, const std::string& where);

/// The same, returning a discarded value instead of throwing (for line-by-line readers).
nlohmann::json try_parse_untrusted_json(std::string_view text);

/// `value` as compact JSON, clipped to kMaxMessageValue bytes, for error messages. Invalid UTF-8
/// in strings is replaced rather than thrown on.
std::string json_brief(const nlohmann::json& value);

}  // namespace lmf::io
