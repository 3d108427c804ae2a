// Internal entry points of the tokenizer.json loader, for load_tokenizer (which parses a JSON file
// once and then decides whether it is lmforge's own format or a Hugging Face tokenizer.json).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "lmforge/data/tokenizer.h"

namespace lmf::data {

/// Builds the tokenizer from a parsed tokenizer.json (`raw`: its text, kept for save()).
std::unique_ptr<HFTokenizer> hf_tokenizer_from_json(const nlohmann::json& doc, std::string raw,
                                                    const std::string& path,
                                                    const std::string& config_path);
/// The pieces a Split pre-tokenizer with regex `pattern` (behavior Isolated) cuts `text` into,
/// with the hand-written ASCII matcher of the Llama 3 and Qwen patterns on or off (tests check
/// that the two agree; with `fast_path` off every match is PCRE2's).
std::vector<std::string> hf_split_regex(const std::string& pattern, std::string_view text, bool fast_path);
/// tokenizer_config.json beside a tokenizer.json file, or "" when there is none.
std::string hf_sibling_config(const std::string& tokenizer_json);

}  // namespace lmf::data
