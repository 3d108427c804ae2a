// DataLoader: cuts (B, T) input/target batches out of memory-mapped token shards, in a random
// order that is a deterministic function of (seed, epoch) or in llm.c's sequential order, split
// across data-parallel ranks. Its position is three integers, so a resumed run continues exactly.
// Shards with loss masks (X.bin.mask, chat data) are cut into windows that start at conversation
// starts and never cross into the next conversation (see "Masked datasets" in docs/data.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lmforge/core/tensor.h"
#include "lmforge/data/shard.h"

namespace lmf::data {

enum class LoaderOrder {
  /// Windows of T+1 tokens starting at multiples of T, each seen once per epoch, in a permutation
  /// drawn from (seed, epoch). Rank r takes the r-th B windows of each group of world_size*B.
  random,
  /// llm.c's order: rank r reads B*T+1 consecutive tokens at offset + r*B*T, the offset advances
  /// by world_size*B*T, and a shard too short for the next step moves on to the next shard.
  sequential,
};

/// "random" / "sequential"; parse_loader_order throws lmf::Error on anything else.
std::string loader_order_name(LoaderOrder order);
LoaderOrder parse_loader_order(const std::string& name);

struct LoaderOptions {
  int64_t batch_size = 1;  ///< B
  int64_t block_size = 1;  ///< T
  LoaderOrder order = LoaderOrder::random;
  uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
  /// Ids must be below this (checked for every token a batch reads); 0 turns the check off.
  int64_t vocab_size = 0;
  /// Masked datasets only: targets whose mask lacks kMaskTrained are ignore_index (-1). False
  /// trains every token of each conversation; window padding is -1 either way.
  bool mask_targets = true;
};

/// Where a loader stands. random: `offset` counts windows consumed by all ranks within `epoch`
/// (`shard` is 0). sequential: the shard index and the token offset of the next step.
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t shard = 0;
  int64_t offset = 0;
  bool operator==(const LoaderPosition&) const = default;
};

struct Batch {
  Tensor inputs;   ///< (B, T) i32
  Tensor targets;  ///< (B, T) i32: inputs shifted left by one token
};

class DataLoader {
 public:
  /// `spec`: a shard file, a directory of .bin shards, or a glob ("data/train_*.bin").
  DataLoader(const std::string& spec, const LoaderOptions& options);
  DataLoader(const std::vector<std::string>& shard_paths, const LoaderOptions& options);

  /// The next batch of this rank.
  Batch next();
  /// Fills caller-owned (B, T) buffers instead of allocating tensors.
  void next(int32_t* inputs, int32_t* targets);

  LoaderPosition position() const { return position_; }
  /// Restores a position reported by position() (validated against this dataset).
  void set_position(const LoaderPosition& position);
  void reset() { set_position(LoaderPosition{}); }

  int64_t num_tokens() const;
  int64_t num_shards() const { return static_cast<int64_t>(shards_.size()); }
  /// random: windows per epoch; sequential: steps per epoch (over all shards).
  int64_t steps_per_epoch() const;
  /// Batches a rank gets per epoch (random order: windows / (world_size * B), rounded down).
  int64_t batches_per_epoch() const;
  const LoaderOptions& options() const { return options_; }
  /// True when the shards carry loss masks: windows follow conversations (both orders use the
  /// window list: random permutes it, sequential reads it in order; `offset` counts windows),
  /// inputs past a conversation's end are 0 and their targets -1.
  bool masked() const { return !masks_.empty(); }

 private:
  struct Window {
    int64_t shard = 0;
    int64_t start = 0;   // first token
    int64_t length = 0;  // tokens read, <= T + 1: inputs [0, length-1), targets shifted by one
  };
  void init_windows();
  void read_masked(int64_t window, int32_t* inputs, int32_t* targets);
  void init();
  void read_window(int64_t shard, int64_t offset, int64_t count, int32_t* out) const;
  int64_t permute(int64_t index, int64_t epoch) const;
  void normalize_sequential();

  LoaderOptions options_;
  std::vector<Shard> shards_;
  std::vector<int64_t> window_prefix_;  // random: windows before shard i (size shards + 1)
  int half_bits_ = 1;                   // random: Feistel half width in bits
  LoaderPosition position_;
  std::vector<int32_t> scratch_;
  std::vector<std::vector<uint8_t>> masks_;  // masked datasets: one flag per token of each shard
  std::vector<Window> windows_;
};

}  // namespace lmf::data
