// Byte-level BPE training (as GPT-2's merges were learned): count GPT-2 pre-tokens, then merge the
// most frequent adjacent pair repeatedly. Pair counts are kept up to date incrementally: a merge
// revisits only the words that contain the merged pair (found through a pair -> words index).
#include <algorithm>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "data/pretokenize.h"
#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"

namespace lmf::data {

void PretokenCounts::add_text(std::string_view text) {
  std::string key;
  pretokenize(text, [&](std::string_view piece) {
    key.assign(piece.data(), piece.size());
    ++counts_[key];
  });
}

void PretokenCounts::merge(const PretokenCounts& other) {
  for (const auto& [piece, count] : other.counts_) counts_[piece] += count;
}

namespace {

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Candidate {
  int64_t count;
  int32_t left;
  int32_t right;
};

// Max-heap order: the higher count first; among equal counts the smaller (left, right).
struct CandidateLess {
  bool operator()(const Candidate& x, const Candidate& y) const {
    if (x.count != y.count) return x.count < y.count;
    if (x.left != y.left) return x.left > y.left;
    return x.right > y.right;
  }
};

struct Word {
  std::vector<int32_t> ids;
  int64_t count;
};

}  // namespace

std::unique_ptr<ByteLevelBPE> train_bpe(const PretokenCounts& counts,
                                        const BpeTrainOptions& options) {
  const auto specials = static_cast<int64_t>(options.special_tokens.size());
  LMF_CHECK(options.vocab_size >= 256 + specials, "vocab size ", options.vocab_size,
            " is too small: byte-level BPE needs 256 byte tokens plus ", specials,
            " special token(s)");
  const int64_t wanted = options.vocab_size - 256 - specials;

  // Words in byte order so that the result does not depend on hash-map iteration order.
  std::vector<const std::pair<const std::string, int64_t>*> sorted;
  sorted.reserve(counts.counts().size());
  for (const auto& entry : counts.counts()) sorted.push_back(&entry);
  std::sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->first < y->first; });
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto* entry : sorted) {
    Word word{{}, entry->second};
    for (unsigned char b : entry->first) word.ids.push_back(b);
    words.push_back(std::move(word));
  }

  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> words_with;  // may hold stale entries
  auto note_word = [&](uint64_t key, int32_t w) {
    auto& list = words_with[key];
    if (list.empty() || list.back() != w) list.push_back(w);
  };
  for (int32_t w = 0; w < static_cast<int32_t>(words.size()); ++w) {
    const auto& ids = words[w].ids;
    for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
      uint64_t key = pair_key(ids[i], ids[i + 1]);
      pair_counts[key] += words[w].count;
      note_word(key, w);
    }
  }
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateLess> heap;
  for (const auto& [key, count] : pair_counts) {
    heap.push({count, static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xffffffffu)});
  }

  std::vector<std::string> token_bytes;
  for (int b = 0; b < 256; ++b) token_bytes.emplace_back(1, static_cast<char>(b));
  std::unordered_map<std::string, int32_t> id_of_bytes;
  for (int b = 0; b < 256; ++b) id_of_bytes[token_bytes[b]] = b;
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::unordered_set<uint64_t> changed;
  std::vector<int32_t> merged_ids;
  auto learned = [&] { return static_cast<int64_t>(token_bytes.size()) - 256; };
  while (learned() < wanted && !heap.empty()) {
    Candidate best = heap.top();
    heap.pop();
    uint64_t best_key = pair_key(best.left, best.right);
    auto current = pair_counts.find(best_key);
    if (current == pair_counts.end() || current->second != best.count) continue;  // stale
    // Two different splits can spell the same bytes ("a"+"bc", "ab"+"c"); they share one id, the
    // way the encoder resolves a merge by the bytes it produces.
    std::string bytes = token_bytes[best.left] + token_bytes[best.right];
    auto [existing, inserted] =
        id_of_bytes.emplace(bytes, static_cast<int32_t>(token_bytes.size()));
    const int32_t new_id = existing->second;
    if (inserted) token_bytes.push_back(std::move(bytes));
    merges.emplace_back(best.left, best.right);

    std::vector<int32_t> affected = std::move(words_with[best_key]);
    words_with.erase(best_key);
    changed.clear();
    for (int32_t w : affected) {
      Word& word = words[w];
      auto& ids = word.ids;
      bool has_pair = false;
      for (std::size_t i = 0; i + 1 < ids.size() && !has_pair; ++i) {
        has_pair = ids[i] == best.left && ids[i + 1] == best.right;
      }
      if (!has_pair) continue;
      for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
        uint64_t key = pair_key(ids[i], ids[i + 1]);
        pair_counts[key] -= word.count;
        changed.insert(key);
      }
      merged_ids.clear();
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i + 1 < ids.size() && ids[i] == best.left && ids[i + 1] == best.right) {
          merged_ids.push_back(new_id);
          ++i;
        } else {
          merged_ids.push_back(ids[i]);
        }
      }
      ids.swap(merged_ids);
      for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
        uint64_t key = pair_key(ids[i], ids[i + 1]);
        pair_counts[key] += word.count;
        changed.insert(key);
        // Pairs without the new token were already indexed for this word.
        if (ids[i] == new_id || ids[i + 1] == new_id) note_word(key, w);
      }
    }
    for (uint64_t key : changed) {
      auto it = pair_counts.find(key);
      if (it->second <= 0) {
        pair_counts.erase(it);
      } else {
        heap.push(
            {it->second, static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xffffffffu)});
      }
    }
    if (options.on_progress) options.on_progress(learned(), wanted);
  }

  std::map<std::string, int32_t> special;
  for (const auto& name : options.special_tokens) {
    LMF_CHECK(special.count(name) == 0, "special token '", name, "' given twice");
    special[name] = static_cast<int32_t>(token_bytes.size());
    token_bytes.push_back(name);
  }
  return std::make_unique<ByteLevelBPE>(std::move(token_bytes), std::move(merges),
                                        std::move(special));
}

}  // namespace lmf::data
