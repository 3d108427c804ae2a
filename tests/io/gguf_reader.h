// What the GGUF export tests know about a written file, from outside lmforge: the metadata and
// tensor infos as @huggingface/gguf (run by node) parses them, the tensor bytes at the offsets it
// reports, and the element decodings written from the formats' definitions (IEEE binary16, bf16).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lmf::test {

/// The folder holding node_modules/@huggingface/gguf, or "" (with a SKIP line) when npm cannot
/// install it.
inline std::string gguf_npm_dir() {
  static std::string dir = [] {
    std::string target = std::string(LMF_BINARY_DIR) + "/test-data/gguf-npm";
    std::string cmd = std::string("sh '") + LMF_SOURCE_DIR + "/tests/io/fetch_gguf_parser.sh' '" + target + "'";
    if (std::system(cmd.c_str()) != 0) {
      std::printf("SKIP: @huggingface/gguf unavailable (fetch_gguf_parser.sh failed)\n");
      return std::string();
    }
    return target;
  }();
  return dir;
}

/// @huggingface/gguf's reading of `file` ({"metadata": {key: {value, type[, subType]}},
/// "tensorDataOffset", "tensors": [{name, shape, dtype, offset}]}); throws when it cannot parse it.
inline nlohmann::json gguf_dump(const std::filesystem::path& file) {
  const std::string out = file.string() + ".dump.json";
  const std::string cmd = "node '" + std::string(LMF_SOURCE_DIR) + "/tests/io/gguf_dump.cjs' '" + gguf_npm_dir() +
                          "' '" + file.string() + "' '" + out + "'";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("gguf_dump.cjs failed on " + file.string());
  std::ifstream in(out);
  return nlohmann::json::parse(in);
}

inline std::string file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// IEEE 754 binary16: sign, 5 exponent bits (bias 15), 10 mantissa bits; exponent 0 is subnormal.
inline float half_to_float(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  float magnitude;
  if (exponent == 0) magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  else if (exponent == 31) magnitude = mantissa ? NAN : INFINITY;
  else magnitude = std::ldexp(1.0f + mantissa / 1024.0f, exponent - 15);
  return sign ? -magnitude : magnitude;
}

/// bf16: the upper 16 bits of an IEEE binary32.
inline float bf16_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Half the gap between `rounded` (a value of a format with `mantissa_bits` stored bits and
/// smallest normal exponent `min_exponent`) and its neighbour: the most a round-to-nearest may move.
inline double half_ulp(double rounded, int mantissa_bits, int min_exponent) {
  int e = rounded == 0 ? min_exponent : std::ilogb(rounded);
  if (e < min_exponent) e = min_exponent;
  return std::ldexp(1.0, e - mantissa_bits - 1);
}

template <class T>
T read_le(const std::string& bytes, std::size_t at) {
  T v;
  std::memcpy(&v, bytes.data() + at, sizeof(T));
  return v;
}

}  // namespace lmf::test
