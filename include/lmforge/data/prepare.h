// prepare_dataset: turns text files and directories into train.bin / val.bin shards plus
// tokenizer.json and meta.json. Streams each file in chunks cut where GPT-2's pre-tokenizer is
// sure to cut too, so corpora larger than memory give the same tokens as encoding them whole.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lmforge/data/tokenizer.h"

namespace lmf::data {

struct PrepareOptions {
  std::vector<std::string> inputs;  ///< files and directories (walked recursively, sorted)
  std::string out_dir;
  /// "char" (learned from the inputs), a tokenizer JSON file, or a GPT-2 directory.
  std::string tokenizer = "char";
  /// The last fraction (in bytes) of every document goes to val.bin; nanoGPT uses 0.1.
  double val_fraction = 0.1;
  /// Put <|endoftext|> before each document's train part and val part (as llm.c does).
  bool eot = false;
  /// Worker threads for tokenization; 0 = all cores (OpenMP's default).
  int threads = 0;
  /// Draw a progress bar (only when stderr is a terminal).
  bool progress = true;
  /// Bytes per unit of work; a file is read and tokenized this many bytes at a time.
  int64_t chunk_bytes = 4 << 20;
};

struct PrepareResult {
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
  int64_t vocab_size = 0;
  std::vector<std::string> files;    ///< documents read, in order
  std::vector<std::string> skipped;  ///< files found in directories but skipped (binary, dups)
};

/// The documents a list of inputs names: explicit files as given; directories walked
/// recursively in sorted order, skipping hidden entries, binary files (a NUL byte in the first
/// 8 KiB, e.g. fortune's .dat indexes) and second paths to an already listed file (symlinks
/// such as fortune's .u8 links). Throws lmf::Error for a missing input.
std::vector<std::string> list_documents(const std::vector<std::string>& inputs,
                                        std::vector<std::string>* skipped = nullptr);

PrepareResult prepare_dataset(const PrepareOptions& options);

/// Counts GPT-2 pre-tokens over the documents of `inputs` (as list_documents finds them), in
/// parallel chunks: the input of train_bpe.
PretokenCounts count_pretokens(const std::vector<std::string>& inputs, int threads = 0,
                               bool progress = true, int64_t chunk_bytes = 4 << 20);

}  // namespace lmf::data
