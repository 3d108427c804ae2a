// A random two-layer GPT checkpoint with its tokenizer, for CLI tests of commands that read one
// (generate, chat). Its vocabulary is padded past the tokenizer's, as GPT-2's 50304 is.
#pragma once
#include <cstdint>
#include <filesystem>

#include "lmforge/data/tokenizer.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/gpt.h"

namespace lmf::test {

inline std::filesystem::path save_tiny_gpt_checkpoint(const std::filesystem::path& dir, const data::Tokenizer& tokenizer,
                                                      int64_t block_size, uint64_t seed) {
  nn::GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.block_size = block_size;
  c.vocab_size = tokenizer.vocab_size() + 3;
  nn::GPT gpt(c, seed);
  const std::filesystem::path ckpt = dir / "ckpt";
  io::save_gpt(gpt, ckpt);
  tokenizer.save((ckpt / "tokenizer.json").string());
  return ckpt;
}

}  // namespace lmf::test
