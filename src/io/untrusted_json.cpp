// Depth-bounded JSON parsing for untrusted files (see untrusted_json.h). The depth is found by a
// plain scan first, so a file of a million '[' is refused before the JSON library recurses into
// it or builds a value that printing or destroying would recurse into.
#include "io/untrusted_json.h"

#include "io/safe_file.h"
#include "lmforge/core/error.h"

namespace lmf::io {

int json_nesting_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

nlohmann::json try_parse_untrusted_json(std::string_view text) {
  if (json_nesting_depth(text) > kMaxJsonDepth)
    return nlohmann::json(nlohmann::json::value_t::discarded);
  return nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
}

nlohmann::json parse_untrusted_json(std::string_view text, const std::string& where) {
  LMF_CHECK(json_nesting_depth(text) <= kMaxJsonDepth, where, ": JSON nested deeper than ",
            kMaxJsonDepth, " levels");
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  LMF_CHECK(!j.is_discarded(), where, ": not valid JSON");
  return j;
}

std::string json_brief(const nlohmann::json& value) {
  return clip(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace lmf::io
