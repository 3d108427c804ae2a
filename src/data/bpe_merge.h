// The BPE merge loop shared by GPT-2's ByteLevelBPE and the tokenizer.json BPE: repeatedly merges
// the adjacent pair with the lowest rank (leftmost on ties), as GPT-2's encoder and Hugging Face's
// BPE model both do. Short words rescan; long ones use a linked list and a heap.
#pragma once
#include <climits>
#include <cstdint>
#include <functional>
#include <queue>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace lmf::data {

inline uint64_t bpe_pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct BpeMergeInfo {
  int32_t rank;
  int32_t id;  ///< the merged token
};

using BpeMergeMap = std::unordered_map<uint64_t, BpeMergeInfo>;

/// Merges `ids` in place until no ranked pair remains.
inline void bpe_merge(std::vector<int32_t>& ids, const BpeMergeMap& merges) {
  const std::size_t n = ids.size();
  if (n < 2) return;
  if (n <= 48) {
    while (ids.size() > 1) {
      int32_t best_rank = INT32_MAX;
      std::size_t best_at = 0;
      int32_t best_id = 0;
      for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
        auto it = merges.find(bpe_pair_key(ids[i], ids[i + 1]));
        if (it != merges.end() && it->second.rank < best_rank) {
          best_rank = it->second.rank;
          best_at = i;
          best_id = it->second.id;
        }
      }
      if (best_rank == INT32_MAX) break;
      ids[best_at] = best_id;
      ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
    }
    return;
  }
  // Long words (runs of spaces, whole SentencePiece-style texts): O(n log n), same merge order.
  std::vector<int32_t> prev(n), next(n);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  using Entry = std::tuple<int32_t, int32_t, int32_t, int32_t>;  // rank, position, left, right
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto push = [&](int32_t at) {
    if (at < 0 || next[at] < 0) return;
    auto it = merges.find(bpe_pair_key(ids[at], ids[next[at]]));
    if (it != merges.end()) heap.emplace(it->second.rank, at, ids[at], ids[next[at]]);
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    auto [rank, at, left, right] = heap.top();
    heap.pop();
    if (!alive[at] || next[at] < 0 || ids[at] != left || ids[next[at]] != right) continue;
    int32_t gone = next[at];
    ids[at] = merges.at(bpe_pair_key(left, right)).id;
    alive[gone] = false;
    next[at] = next[gone];
    if (next[at] >= 0) prev[next[at]] = at;
    push(prev[at]);
    push(at);
  }
  std::size_t k = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) ids[k++] = ids[i];
  ids.resize(k);
}

}  // namespace lmf::data
