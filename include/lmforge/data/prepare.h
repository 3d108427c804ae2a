// prepare_dataset: turns text files and directories into train.bin / val.bin shards plus
// tokenizer.json and meta.json. Streams each file in chunks cut where GPT-2's pre-tokenizer is
// sure to cut too, so corpora larger than memory give the same tokens as encoding them whole.
// format "chat" reads JSONL conversations instead and writes a loss mask beside each shard.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lmforge/data/chat_template.h"
#include "lmforge/data/tokenizer.h"

namespace lmf::data {

struct PrepareOptions {
  std::vector<std::string> inputs;  ///< files and directories (walked recursively, sorted)
  /// "text": documents of plain text. "chat": JSONL conversations, one per line
  /// ({"messages": [...]} or {"prompt", "completion"}), rendered through the tokenizer's chat
  /// template, with train.bin.mask / val.bin.mask marking assistant tokens (docs/formats.md).
  std::string format = "text";
  std::string out_dir;
  /// "char" (learned from the inputs), a tokenizer JSON file, or a GPT-2 directory.
  std::string tokenizer = "char";
  /// The last fraction (in bytes) of every document goes to val.bin; nanoGPT uses 0.1. Chat: the
  /// last fraction of each file's conversations (rounded down).
  double val_fraction = 0.1;
  /// Put <|endoftext|> before each document's train part and val part (as llm.c does).
  bool eot = false;
  /// Extra special tokens of the learned char tokenizer (ids after the characters and after
  /// <|endoftext|>), e.g. ChatML's <|im_start|> and <|im_end|> so that the model can later be
  /// instruction-tuned with `--format chat`. Only with tokenizer "char".
  std::vector<std::string> special_tokens;
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

/// A conversation as the model sees it: token ids and one mask flag per token (kMaskStart on the
/// first, kMaskTrained on the tokens of assistant turns, each turn's end-of-turn token included).
struct ChatTokens {
  std::vector<int32_t> ids;
  std::vector<uint8_t> flags;
};

/// Renders `messages` through `chat_template` and tokenizes the text (special tokens allowed).
/// Throws lmf::Error when the template renders a conversation prefix as something other than a
/// prefix of the whole (the assistant turns could not be located).
ChatTokens tokenize_chat(const ChatTemplate& chat_template, const Tokenizer& tokenizer,
                         const std::vector<ChatMessage>& messages);

/// One JSONL line's conversation: {"messages": [{"role", "content"}, ...]} with roles system,
/// user and assistant, or {"prompt": ..., "completion": ...} (a user and an assistant turn).
/// `where` names the file and line in errors.
std::vector<ChatMessage> parse_chat_line(std::string_view line, const std::string& where);

/// Counts GPT-2 pre-tokens over the documents of `inputs` (as list_documents finds them), in
/// parallel chunks: the input of train_bpe.
PretokenCounts count_pretokens(const std::vector<std::string>& inputs, int threads = 0,
                               bool progress = true, int64_t chunk_bytes = 4 << 20);

}  // namespace lmf::data
