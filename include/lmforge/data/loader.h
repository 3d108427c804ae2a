// DataLoader: cuts (B, T) input/target batches out of memory-mapped token shards, in a random
// order that is a deterministic function of (seed, epoch) or in llm.c's sequential order, split
// across data-parallel ranks. Its position is three integers, so a resumed run continues exactly.
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

 private:
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
};

}  // namespace lmf::data
