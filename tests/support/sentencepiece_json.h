// tokenizer.json documents in Llama 2's SentencePiece-style pipeline (Prepend + Replace of spaces
// by '▁', byte-fallback pieces <0xNN>, Fuse and Strip on decode), built in one place for the tests
// of the tokenizer, of the GGUF export and of the fine-tuning CLI. Each test picks its own vocabulary
// beyond the bytes and its own merges.
#pragma once
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lmf::test {

inline const std::string kSentencePieceSpace = "\xE2\x96\x81";

/// "<0xNN>", the byte-fallback piece of byte b.
inline std::string byte_piece(int b) {
  char name[8];
  std::snprintf(name, sizeof name, "<0x%02X>", b);
  return name;
}

/// <unk> <s> </s> at 0, 1, 2, then the 256 byte pieces at 3.., then `pieces` in order from 259.
inline nlohmann::json sentencepiece_vocab(const std::vector<std::string>& pieces) {
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[byte_piece(b)] = 3 + b;
  int next = 259;
  for (const std::string& p : pieces) vocab[p] = next++;
  return vocab;
}

/// A whole tokenizer.json: `added` special tokens, the pipeline, a BPE model over `vocab`/`merges`.
inline nlohmann::json sentencepiece_tokenizer(const nlohmann::json& vocab, const nlohmann::json& merges,
                                              const nlohmann::json& added) {
  const std::string& space = kSentencePieceSpace;
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", space}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}}},
          {"pre_tokenizer", nullptr},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "<unk>"},
            {"byte_fallback", true},
            {"fuse_unk", true},
            {"vocab", vocab},
            {"merges", merges}}}};
}

/// The added-tokens entry of a special token.
inline nlohmann::json special_token(int id, const std::string& content) {
  return {{"id", id}, {"content", content}, {"special", true}};
}

}  // namespace lmf::test
