// Shared by the libFuzzer targets: parsers that take a path get the input through private
// temporary files; lmf::Error is the expected outcome of bad input, anything else is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace lmf::fuzz {

/// A private directory for this process, made once and removed at exit.
inline const std::string& temp_dir() {
  // The name also lives in a plain buffer: the exit handler runs after `dir` is destroyed.
  static char name[] = "/tmp/lmf_fuzz_XXXXXX";
  static std::string dir = [] {
    if (!::mkdtemp(name)) std::abort();
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(name, ignored);
    });
    return std::string(name);
  }();
  return dir;
}

/// Writes `text` to `name` inside temp_dir() and returns its path.
inline std::string write_temp(const std::string& name, std::string_view text) {
  const std::string path = temp_dir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (!text.empty()) std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
  return path;
}

inline std::string temp_file_with(const uint8_t* data, size_t size) {
  return write_temp("input", std::string_view(reinterpret_cast<const char*>(data), size));
}

/// The input split in two at the first "\n--\n" (a file and its companion, e.g. tokenizer.json
/// and tokenizer_config.json); the second part is empty when there is no separator.
inline std::pair<std::string_view, std::string_view> split_two(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t at = all.find("\n--\n");
  if (at == std::string_view::npos) return {all, {}};
  return {all.substr(0, at), all.substr(at + 4)};
}

}  // namespace lmf::fuzz
