// Tokenizers behind one interface: CharTokenizer (one id per Unicode code point of a corpus),
// ByteLevelBPE (GPT-2's byte-level BPE, loadable from GPT-2's files or trained on a corpus) and
// HFTokenizer (a Hugging Face tokenizer.json BPE: Llama 3, Qwen2/3, Llama 2, Mistral, Gemma).
// Each saves to and loads from one JSON file, so a prepared dataset and a checkpoint carry theirs.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmf::data {

/// The end-of-text special token, spelled as GPT-2 spells it.
inline constexpr const char* kEndOfText = "<|endoftext|>";

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// "char", "byte_bpe" (the "type" field of lmforge's JSON file) or "hf_bpe" (tokenizer.json).
  virtual std::string type() const = 0;
  /// Number of ids, special tokens included: every id is in [0, vocab_size()).
  virtual int64_t vocab_size() const = 0;
  /// Encodes text. Special-token spellings in `text` are ordinary text unless `allow_special`,
  /// in which case each occurrence becomes its special id (as tiktoken's allowed_special="all").
  /// Throws lmf::Error for text the tokenizer cannot represent (CharTokenizer: unknown character).
  virtual std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const = 0;
  /// Bytes of the ids concatenated (may end inside a UTF-8 character). Throws on an unknown id.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  /// Special tokens (name -> id).
  virtual const std::map<std::string, int32_t>& special_tokens() const = 0;
  /// Writes the tokenizer as one JSON file (written to a temporary name, then renamed).
  virtual void save(const std::string& path) const = 0;

  /// Id of the token that separates documents: <|endoftext|>, or -1 when the tokenizer has none
  /// (HFTokenizer: <|endoftext|> if it is a special token, else the eos token).
  virtual int32_t eot_id() const;
};

/// One id per code point of the corpus, in code point order (nanoGPT's character model).
class CharTokenizer : public Tokenizer {
 public:
  /// `code_points` in any order (duplicates dropped); special tokens get the ids after them.
  explicit CharTokenizer(std::vector<uint32_t> code_points,
                         const std::vector<std::string>& special_tokens = {});
  /// Learns the vocabulary: the sorted unique code points of `text` (must be valid UTF-8).
  static CharTokenizer from_text(std::string_view text,
                                 const std::vector<std::string>& special_tokens = {});

  std::string type() const override { return "char"; }
  int64_t vocab_size() const override;
  std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  const std::map<std::string, int32_t>& special_tokens() const override { return special_; }
  void save(const std::string& path) const override;

  const std::vector<uint32_t>& code_points() const { return code_points_; }

 private:
  std::vector<uint32_t> code_points_;  // sorted; id = index
  std::vector<int32_t> ascii_ids_;     // 128 entries, -1 when absent
  std::map<std::string, int32_t> special_;
};

/// GPT-2's byte-level BPE: bytes map to 256 base tokens, text is cut by GPT-2's pre-tokenization
/// pattern, and within each piece the adjacent pair with the lowest merge rank is merged until no
/// ranked pair remains. Encoding output equals tiktoken's "gpt2" encoding for GPT-2's files.
class ByteLevelBPE : public Tokenizer {
 public:
  /// `token_bytes[id]`: the bytes of each non-special token; 256 of them are single bytes.
  /// `merges[rank]`: the pair of ids merged at that rank; the merged token must exist.
  ByteLevelBPE(std::vector<std::string> token_bytes,
               std::vector<std::pair<int32_t, int32_t>> merges,
               std::map<std::string, int32_t> special_tokens);
  ~ByteLevelBPE() override;

  /// Loads GPT-2's files from a directory: vocab.json + merges.txt, or encoder.json + vocab.bpe.
  static std::unique_ptr<ByteLevelBPE> from_gpt2_directory(const std::string& dir);

  std::string type() const override { return "byte_bpe"; }
  int64_t vocab_size() const override;
  std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const override;
  /// Appends the ids of `text` (no special tokens) to `out`; the hot path of `prepare`.
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  std::string decode(const std::vector<int32_t>& ids) const override;
  const std::map<std::string, int32_t>& special_tokens() const override { return special_; }
  void save(const std::string& path) const override;

  const std::vector<std::string>& token_bytes() const { return token_bytes_; }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }

 private:
  struct Impl;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  std::vector<std::string> token_bytes_;
  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::map<std::string, int32_t> special_;
  std::unique_ptr<Impl> impl_;
};

/// A Hugging Face `tokenizer.json` BPE tokenizer (the "tokenizers" library's format), with
/// `tokenizer_config.json` for bos/eos. Supported: model BPE (merges as "a b" strings or [a, b]
/// pairs, byte_fallback, unk/fuse_unk, ignore_merges); normalizers NFC, NFKC, NFD, NFKD, Replace
/// (string pattern), Prepend, Sequence; pre-tokenizers Split (regex or string, any behavior),
/// ByteLevel, Metaspace, Sequence; decoders ByteLevel, Replace, ByteFallback, Fuse, Strip,
/// Metaspace, Sequence. Anything else is refused at load with an error naming the file and key.
/// encode() never adds bos/eos (the post-processor is not applied): callers add bos_id().
class HFTokenizer : public Tokenizer {
 public:
  /// Loads `dir`/tokenizer.json and, when present, `dir`/tokenizer_config.json.
  static std::unique_ptr<HFTokenizer> from_directory(const std::string& dir);
  /// Loads a tokenizer.json file; `config_path` (tokenizer_config.json) may be "".
  static std::unique_ptr<HFTokenizer> from_file(const std::string& path,
                                                const std::string& config_path = "");
  ~HFTokenizer() override;

  std::string type() const override { return "hf_bpe"; }
  int64_t vocab_size() const override;
  /// Added tokens (special or not) become their one id only when `allow_special`; otherwise their
  /// spelling is encoded as ordinary text.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const override;
  /// Bytes of the ids concatenated, after the file's decoders (byte fallback tokens become their
  /// byte, '▁' a space; a Strip or Metaspace decoder removes the leading space of the sequence).
  std::string decode(const std::vector<int32_t>& ids) const override;
  /// The added tokens marked "special" (name -> id).
  const std::map<std::string, int32_t>& special_tokens() const override;
  /// Writes the original tokenizer.json to `path`, and tokenizer_config.json (when one was loaded)
  /// beside it, so the directory loads again as it was.
  void save(const std::string& path) const override;
  int32_t eot_id() const override;

  /// All added tokens, special or not (content -> id).
  const std::map<std::string, int32_t>& added_tokens() const;
  /// bos/eos spelling from tokenizer_config.json ("" when absent) and id (-1 when absent).
  const std::string& bos_token() const;
  const std::string& eos_token() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  /// True when the vocabulary is byte-level (a ByteLevel pre-tokenizer), false for
  /// SentencePiece-style vocabularies ('▁' for spaces, <0xNN> byte fallback).
  bool byte_level() const;
  /// One-line descriptions of the pipeline, e.g. "Sequence[Split(regex, Isolated), ByteLevel]".
  const std::string& normalizer_kind() const;
  const std::string& pretokenizer_kind() const;
  const std::string& decoder_kind() const;

 private:
  HFTokenizer();
  struct Impl;
  friend struct HFTokenizerLoader;
  std::unique_ptr<Impl> impl_;
};

/// Options of BPE training. Ties between equally frequent pairs go to the smaller
/// (left id, right id), so training is deterministic for a given corpus and order of inputs.
struct BpeTrainOptions {
  int64_t vocab_size = 0;  ///< final size, special tokens included
  std::vector<std::string> special_tokens = {kEndOfText};
  /// Called after each merge with (merges done, merges wanted); may draw a progress bar.
  std::function<void(int64_t, int64_t)> on_progress;
};

/// Pre-token counts of a corpus: the input of BPE training, filled incrementally by chunks.
class PretokenCounts {
 public:
  /// Pre-tokenizes `text` (GPT-2's pattern) and counts the pieces. Not thread-safe; merge
  /// per-thread counts with `merge`.
  void add_text(std::string_view text);
  void merge(const PretokenCounts& other);
  std::size_t unique_pieces() const { return counts_.size(); }
  const std::unordered_map<std::string, int64_t>& counts() const { return counts_; }

 private:
  std::unordered_map<std::string, int64_t> counts_;
};

/// Learns byte-level BPE merges from pre-token counts (ids 0..255 are the bytes themselves,
/// then one id per merge, then the special tokens). Pair counts are updated incrementally, only
/// for the words a merge touches.
std::unique_ptr<ByteLevelBPE> train_bpe(const PretokenCounts& counts,
                                        const BpeTrainOptions& options);

/// Loads a tokenizer from a spec: a tokenizer JSON file written by Tokenizer::save, a Hugging Face
/// tokenizer.json file, a directory holding tokenizer.json (+ tokenizer_config.json), or a
/// directory holding GPT-2's files. ("char" is learned by `prepare`, not loaded.)
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

/// GPT-2's reversible byte -> printable code point table (bytes_to_unicode in encoder.py).
std::vector<uint32_t> gpt2_byte_to_code_point();

/// Appends the UTF-8 encoding of a code point.
void append_utf8(std::string& out, uint32_t code_point);

}  // namespace lmf::data
