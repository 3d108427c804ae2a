// A small generated corpus for trainer tests (CPU and GPU): sentences of words drawn by an LCG,
// enough structure to learn and enough variety not to be memorised at once, prepared with the
// character tokenizer.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "lmforge/data/prepare.h"

namespace lmf::test {

inline std::string generated_text(int lines, uint32_t seed) {
  static const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog",
                                "and", "runs", "far", "away", "from", "home", "today"};
  std::string text;
  uint32_t state = seed;
  for (int l = 0; l < lines; ++l)
    for (int w = 0; w < 8; ++w) {
      state = state * 1664525u + 1013904223u;
      text += words[(state >> 16) % 16];
      text += w == 7 ? ".\n" : " ";
    }
  return text;
}

/// Writes `text` to dir/corpus.txt and prepares it with the char tokenizer into dir/data
/// (train.bin, val.bin, tokenizer.json), which it returns.
inline std::filesystem::path prepare_char_corpus(const std::filesystem::path& dir, const std::string& text,
                                                 double val_fraction = 0.1) {
  std::ofstream(dir / "corpus.txt", std::ios::binary) << text;
  lmf::data::PrepareOptions options;
  options.inputs = {(dir / "corpus.txt").string()};
  options.out_dir = (dir / "data").string();
  options.val_fraction = val_fraction;
  options.threads = 1;
  options.progress = false;
  lmf::data::prepare_dataset(options);
  return dir / "data";
}

}  // namespace lmf::test
