// GPT-2's pre-tokenizer, written by hand: splits text into the pieces matched by
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// BPE merges never cross these pieces. Shared by ByteLevelBPE encoding and BPE training.
#pragma once
#include <cstddef>
#include <string_view>

namespace lmf::data {

/// Calls `on_piece(std::string_view)` for each pre-token of `text`, in order. Bytes that are not
/// valid UTF-8 count as single "other" characters, so every byte lands in exactly one piece.
template <class F>
void pretokenize(std::string_view text, F&& on_piece);

/// Length in bytes of the pre-token that starts at `pos` (pos < text.size()).
std::size_t pretoken_length(std::string_view text, std::size_t pos);

template <class F>
void pretokenize(std::string_view text, F&& on_piece) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t n = pretoken_length(text, pos);
    on_piece(text.substr(pos, n));
    pos += n;
  }
}

/// A position near `target` (searching backwards, not before `lower`) where a pre-token is sure to
/// start whatever follows, so a long text can be cut there and each part pre-tokenized alone.
/// Returns `target` moved to a UTF-8 character boundary when no such position exists.
std::size_t safe_split_point(std::string_view text, std::size_t lower, std::size_t target);

}  // namespace lmf::data
