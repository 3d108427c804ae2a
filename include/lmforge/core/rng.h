// Counter-based random numbers (Philox4x32-10). Element i of a draw depends only on (seed, offset+i),
// so results are identical for any thread count and on any device, and the generator's whole state
// is two integers that checkpoints save and restore.
#pragma once
#include <array>
#include <cstdint>

namespace lmf {

/// Philox4x32-10 block for a 64-bit key and a 64-bit counter.
std::array<uint32_t, 4> philox(uint64_t key, uint64_t counter);
/// Uniform float in [0, 1) for element `index` of the stream `key`.
float philox_uniform(uint64_t key, uint64_t index);
/// Standard normal float for element `index` of the stream `key` (Box-Muller).
float philox_normal(uint64_t key, uint64_t index);

class Generator {
 public:
  struct State {
    uint64_t seed = 0;
    uint64_t offset = 0;
    bool operator==(const State&) const = default;
  };

  explicit Generator(uint64_t seed = 0) : state_{seed, 0} {}
  uint64_t seed() const { return state_.seed; }
  State state() const { return state_; }
  void set_state(State state) { state_ = state; }
  /// Reserves `count` consecutive counters and returns the first; draws use philox_*(seed, first + i).
  uint64_t advance(uint64_t count) {
    uint64_t first = state_.offset;
    state_.offset += count;
    return first;
  }
  /// Next uniform [0, 1) draw, for scalar use (sampling).
  float uniform() { return philox_uniform(state_.seed, advance(1)); }

 private:
  State state_;
};

}  // namespace lmf
