// GPT-2's byte <-> printable-character mapping as strings: byte-level vocabularies (GPT-2's files,
// tokenizer.json with a ByteLevel pre-tokenizer) spell each token's bytes with these characters.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace lmf::data {

/// Each byte as its GPT-2 character, UTF-8 encoded.
std::string bytes_to_gpt2_string(const std::string& bytes, const std::vector<uint32_t>& table);
/// Inverse of bytes_to_gpt2_string; false if a character is not in GPT-2's byte table.
bool gpt2_string_to_bytes(const std::string& text, const std::unordered_map<uint32_t, int>& inverse,
                          std::string* bytes);
/// GPT-2 character -> byte.
std::unordered_map<uint32_t, int> gpt2_code_point_to_byte();

}  // namespace lmf::data
