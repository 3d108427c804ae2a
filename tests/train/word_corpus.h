// A small generated corpus for trainer tests (CPU and GPU): sentences of words drawn by an LCG,
// enough structure to learn and enough variety not to be memorised at once, prepared with the
// character tokenizer.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "lmforge/data/prepare.h"
#include "lmforge/train/config.h"

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

/// The smallest useful run on `corpus`: a 1-layer, 32-wide GPT, batches of 4 x 16 tokens, one
/// thread, evaluation only at the end (2 batches), every checkpoint kept, no progress output.
/// Callers change what their test needs and call validate().
inline train::Config tiny_run_config(const std::filesystem::path& out_dir, const std::filesystem::path& corpus,
                                     uint64_t seed, int64_t max_steps) {
  train::Config c;
  c.run.out_dir = out_dir.string();
  c.run.seed = seed;
  c.run.threads = 1;
  c.data.train = corpus.string();
  c.model.n_layer = 1;
  c.model.n_head = 2;
  c.model.n_embd = 32;
  c.model.block_size = 16;
  c.training.batch_size = 4;
  c.training.max_steps = max_steps;
  c.training.warmup_steps = 2;
  c.eval.interval = 0;
  c.eval.batches = 2;
  c.checkpoint.keep_last = 100;
  c.logging.progress = train::ProgressMode::none;
  return c;
}

}  // namespace lmf::test
