// DataLoader (see lmforge/data/loader.h). The random order is a keyed Feistel permutation of the
// window indices (cycle-walked into range), so any position of any epoch is computed directly:
// no per-epoch index array, and resuming needs only (epoch, offset).
#include "lmforge/data/loader.h"

#include <algorithm>
#include <filesystem>

#include "lmforge/core/error.h"
#include "lmforge/core/rng.h"

namespace lmf::data {

std::string loader_order_name(LoaderOrder order) {
  return order == LoaderOrder::random ? "random" : "sequential";
}

LoaderOrder parse_loader_order(const std::string& name) {
  if (name == "random") return LoaderOrder::random;
  if (name == "sequential") return LoaderOrder::sequential;
  throw Error(str("unknown loader order '", name, "' (expected random or sequential)"));
}

DataLoader::DataLoader(const std::string& spec, const LoaderOptions& options)
    : DataLoader(expand_shard_paths(spec), options) {}

DataLoader::DataLoader(const std::vector<std::string>& shard_paths, const LoaderOptions& options)
    : options_(options) {
  LMF_CHECK(!shard_paths.empty(), "a data loader needs at least one shard");
  for (const auto& path : shard_paths) shards_.emplace_back(path);
  // Either every shard has a mask or none: a mix would train some tokens under the wrong rule.
  std::size_t with_mask = 0;
  for (const auto& path : shard_paths) with_mask += std::filesystem::exists(mask_path_for(path));
  LMF_CHECK(with_mask == 0 || with_mask == shard_paths.size(), "dataset '", shard_paths.front(), "': ",
            with_mask, " of ", shard_paths.size(), " shards have a loss mask (.bin.mask); all or none must");
  if (with_mask > 0)
    for (const auto& s : shards_) masks_.push_back(read_mask(mask_path_for(s.path()), s.size()));
  init();
}

void DataLoader::init() {
  const auto& o = options_;
  LMF_CHECK(o.batch_size >= 1 && o.block_size >= 1, "batch size and block size must be >= 1, got ",
            o.batch_size, " and ", o.block_size);
  LMF_CHECK(o.world_size >= 1 && o.rank >= 0 && o.rank < o.world_size, "rank ", o.rank,
            " is outside world size ", o.world_size);
  const int64_t T = o.block_size;
  if (masked()) {
    init_windows();
  } else if (o.order == LoaderOrder::random) {
    window_prefix_.assign(1, 0);
    for (const auto& shard : shards_) {
      int64_t windows = shard.size() > T ? (shard.size() - 1) / T : 0;
      window_prefix_.push_back(window_prefix_.back() + windows);
    }
    LMF_CHECK(window_prefix_.back() > 0, "dataset '", shards_.front().path(), "' (", num_tokens(),
              " tokens in ", shards_.size(), " shard(s)) has no shard with block_size+1 = ", T + 1,
              " tokens");
    uint64_t last = static_cast<uint64_t>(window_prefix_.back() - 1);
    int bits = 1;
    while (bits < 64 && (last >> bits) != 0) ++bits;
    half_bits_ = std::max(1, (bits + 1) / 2);
  } else {
    const int64_t step = o.world_size * o.batch_size * T;
    bool usable = std::any_of(shards_.begin(), shards_.end(),
                              [&](const Shard& s) { return s.size() >= step + 1; });
    // Validation data is always read in order whatever data.order says, so the message names the
    // sizes at fault rather than an order the user may not have chosen.
    LMF_CHECK(usable, "dataset '", shards_.front().path(), "': too small for one batch read in order ",
              "(as validation data always is): it needs a shard of at least ",
              "world_size*B*T+1 = ", step + 1, " tokens; the largest has ",
              std::max_element(shards_.begin(), shards_.end(), [](const Shard& a, const Shard& b) {
                return a.size() < b.size();
              })->size());
  }
  scratch_.resize(static_cast<std::size_t>(o.batch_size * T + 1));
  set_position(LoaderPosition{});
}

// No packing: each conversation [start, end) gives the windows starting at start, start+T, ...
// that hold at least one target, so every target of a conversation is in exactly one window and
// no window sees another conversation's tokens. The list is the random order's window space.
void DataLoader::init_windows() {
  const int64_t T = options_.block_size;
  windows_.clear();
  for (std::size_t s = 0; s < shards_.size(); ++s) {
    const std::vector<uint8_t>& mask = masks_[s];
    const auto n = static_cast<int64_t>(mask.size());
    for (int64_t begin = 0; begin < n;) {
      int64_t end = begin + 1;
      while (end < n && !(mask[static_cast<std::size_t>(end)] & kMaskStart)) ++end;
      for (int64_t p = begin; p + 1 < end; p += T)
        windows_.push_back({static_cast<int64_t>(s), p, std::min(T + 1, end - p)});
      begin = end;
    }
  }
  LMF_CHECK(!windows_.empty(), "dataset '", shards_.front().path(), "' has no conversation of 2 tokens or more");
  window_prefix_.assign({0, static_cast<int64_t>(windows_.size())});
  uint64_t last = windows_.size() - 1;
  int bits = 1;
  while (bits < 64 && (last >> bits) != 0) ++bits;
  half_bits_ = std::max(1, (bits + 1) / 2);
}

void DataLoader::read_masked(int64_t window, int32_t* inputs, int32_t* targets) {
  const int64_t T = options_.block_size;
  const Window& w = windows_[static_cast<std::size_t>(window)];
  int32_t* buf = scratch_.data();
  read_window(w.shard, w.start, w.length, buf);
  const uint8_t* flags = masks_[static_cast<std::size_t>(w.shard)].data() + w.start;
  for (int64_t t = 0; t < T; ++t) {
    inputs[t] = t < w.length ? buf[t] : 0;
    const bool trained = t + 1 < w.length && (!options_.mask_targets || (flags[t + 1] & kMaskTrained));
    targets[t] = trained ? buf[t + 1] : -1;
  }
}

int64_t DataLoader::num_tokens() const {
  int64_t total = 0;
  for (const auto& s : shards_) total += s.size();
  return total;
}

int64_t DataLoader::steps_per_epoch() const {
  if (options_.order == LoaderOrder::random || masked()) return window_prefix_.back();
  const int64_t step = options_.world_size * options_.batch_size * options_.block_size;
  int64_t steps = 0;
  for (const auto& s : shards_) steps += s.size() >= step + 1 ? (s.size() - 1) / step : 0;
  return steps;
}

int64_t DataLoader::batches_per_epoch() const {
  if (options_.order == LoaderOrder::sequential && !masked()) return steps_per_epoch();
  return window_prefix_.back() / (options_.world_size * options_.batch_size);
}

int64_t DataLoader::permute(int64_t index, int64_t epoch) const {
  // A 4-round Feistel network on 2*half_bits_ bits is a bijection; walking the cycle until the
  // value falls below the window count restricts it to a bijection of [0, windows).
  const int h = half_bits_;
  const uint64_t mask = (h >= 64) ? ~0ull : ((1ull << h) - 1);
  const auto windows = static_cast<uint64_t>(window_prefix_.back());
  uint64_t x = static_cast<uint64_t>(index);
  do {
    uint64_t left = x >> h;
    uint64_t right = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      uint64_t counter = ((static_cast<uint64_t>(epoch) * 4 + round) << 32) | right;
      auto r = philox(options_.seed, counter);
      uint64_t f = ((static_cast<uint64_t>(r[1]) << 32) | r[0]) & mask;
      uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    x = (left << h) | right;
  } while (x >= windows);
  return static_cast<int64_t>(x);
}

void DataLoader::read_window(int64_t shard, int64_t offset, int64_t count, int32_t* out) const {
  const Shard& s = shards_[static_cast<std::size_t>(shard)];
  s.read(offset, count, out);
  const int64_t vocab = options_.vocab_size;
  if (vocab <= 0) return;
  for (int64_t i = 0; i < count; ++i) {
    LMF_CHECK(out[i] >= 0 && out[i] < vocab, "shard '", s.path(), "': token ",
              static_cast<uint32_t>(out[i]), " at token offset ", offset + i,
              " is out of range for vocab size ", vocab);
  }
}

void DataLoader::normalize_sequential() {
  const int64_t step = options_.world_size * options_.batch_size * options_.block_size;
  auto& p = position_;
  while (p.offset + step + 1 > shards_[static_cast<std::size_t>(p.shard)].size()) {
    p.offset = 0;
    if (++p.shard == num_shards()) {
      p.shard = 0;
      ++p.epoch;
    }
  }
}

void DataLoader::set_position(const LoaderPosition& position) {
  LMF_CHECK(position.epoch >= 0, "loader position: negative epoch ", position.epoch);
  if (options_.order == LoaderOrder::random || masked()) {
    LMF_CHECK(
        position.shard == 0 && position.offset >= 0 && position.offset < window_prefix_.back(),
        "loader position (epoch ", position.epoch, ", shard ", position.shard, ", offset ",
        position.offset, ") does not fit this dataset of ", window_prefix_.back(), " windows");
    position_ = position;
    return;
  }
  LMF_CHECK(position.shard >= 0 && position.shard < num_shards() && position.offset >= 0 &&
                position.offset <= shards_[static_cast<std::size_t>(position.shard)].size(),
            "loader position (epoch ", position.epoch, ", shard ", position.shard, ", offset ",
            position.offset, ") does not fit this dataset of ", num_shards(), " shard(s)");
  position_ = position;
  normalize_sequential();
}

void DataLoader::next(int32_t* inputs, int32_t* targets) {
  const int64_t B = options_.batch_size;
  const int64_t T = options_.block_size;
  const int64_t world = options_.world_size;
  const int64_t rank = options_.rank;
  int32_t* buf = scratch_.data();
  if (masked()) {
    const int64_t windows = window_prefix_.back();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t k = position_.offset + rank * B + b;
      const int64_t epoch = position_.epoch + k / windows;
      const int64_t window = options_.order == LoaderOrder::random ? permute(k % windows, epoch) : k % windows;
      read_masked(window, inputs + b * T, targets + b * T);
    }
    const int64_t consumed = position_.offset + world * B;
    position_.epoch += consumed / windows;
    position_.offset = consumed % windows;
    return;
  }
  if (options_.order == LoaderOrder::sequential) {
    read_window(position_.shard, position_.offset + rank * B * T, B * T + 1, buf);
    std::copy(buf, buf + B * T, inputs);
    std::copy(buf + 1, buf + B * T + 1, targets);
    position_.offset += world * B * T;
    normalize_sequential();
    return;
  }
  const int64_t windows = window_prefix_.back();
  for (int64_t b = 0; b < B; ++b) {
    int64_t k = position_.offset + rank * B + b;  // may run into the following epochs
    int64_t epoch = position_.epoch + k / windows;
    int64_t window = permute(k % windows, epoch);
    auto it = std::upper_bound(window_prefix_.begin(), window_prefix_.end(), window);
    int64_t shard = (it - window_prefix_.begin()) - 1;
    int64_t start = (window - window_prefix_[static_cast<std::size_t>(shard)]) * T;
    read_window(shard, start, T + 1, buf);
    std::copy(buf, buf + T, inputs + b * T);
    std::copy(buf + 1, buf + T + 1, targets + b * T);
  }
  int64_t consumed = position_.offset + world * B;
  position_.epoch += consumed / windows;
  position_.offset = consumed % windows;
}

Batch DataLoader::next() {
  const Shape shape{options_.batch_size, options_.block_size};
  Batch batch{Tensor::empty(shape, DType::i32), Tensor::empty(shape, DType::i32)};
  next(batch.inputs.data<int32_t>(), batch.targets.data<int32_t>());
  return batch;
}

}  // namespace lmf::data
