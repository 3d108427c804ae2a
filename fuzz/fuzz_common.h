// Shared by the libFuzzer targets: parsers that take a path get the input through a private
// temporary file; lmf::Error is the expected outcome of bad input, anything else is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace lmf::fuzz {

inline std::string temp_file_with(const uint8_t* data, size_t size) {
  static std::string path = [] {
    char pattern[] = "/tmp/lmf_fuzz_XXXXXX";
    const int fd = ::mkstemp(pattern);
    if (fd < 0) std::abort();
    ::close(fd);
    return std::string(pattern);
  }();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}

}  // namespace lmf::fuzz
