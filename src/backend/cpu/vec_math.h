// Vectorised row primitives (max, exp, tanh) shared by the CPU kernels. Eigen's packet math gives
// SIMD exp and tanh on whatever the build targets (AVX-512, AVX2, SSE, NEON) without intrinsics
// here; std::exp/std::tanh in a loop stay scalar libm calls, which were ~27% of a small-model step.
//
// Every primitive walks its row in fixed blocks of kLanes elements (the tail padded), so which
// elements take the SIMD path and the order of every sum depend only on the length, never on the
// buffer's address. A dynamic-size Eigen expression would peel scalar elements up to the first
// aligned address, making results differ in the last bit between two runs of the same step.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <vector>

namespace lmf::cpu::vec {

/// 64-byte aligned allocation for kernel scratch vectors: compiler-vectorised loops may peel
/// elements up to an aligned address, so scratch must start at the same alignment in every run.
template <class T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(std::size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { std::free(p); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const { return true; }
};
using AlignedVector = std::vector<float, AlignedAllocator<float>>;

/// Kernel scratch: 64-byte aligned, one set per thread, grown on demand and never shrunk, so a
/// steady-state training step allocates nothing. Buffers of different `slot`s (0-3) are distinct;
/// the contents are unspecified (callers write before they read) and stay valid until the same
/// thread asks for the same slot of the same type again.
template <class T>
T* thread_scratch(int slot, std::size_t n) {
  struct Buffer {
    void* data = nullptr;
    std::size_t bytes = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[4];
  Buffer& b = buffers[slot];
  const std::size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
  if (bytes > b.bytes) {
    std::free(b.data);
    b.data = std::aligned_alloc(64, bytes);
    b.bytes = b.data ? bytes : 0;
    if (!b.data) throw std::bad_alloc();
  }
  return static_cast<T*>(b.data);
}

constexpr int64_t kLanes = 16;
using Block = Eigen::Array<float, kLanes, 1>;

/// Elements [0, n) of x (n <= kLanes); the rest of the block is `pad`.
inline Block load(const float* x, int64_t n, float pad) {
  if (n == kLanes) return Eigen::Map<const Block>(x);
  Block b = Block::Constant(pad);
  for (int64_t i = 0; i < n; ++i) b[i] = x[i];
  return b;
}

/// Writes elements [0, n) of b to y.
inline void store(float* y, const Block& b, int64_t n) {
  if (n == kLanes) {
    Eigen::Map<Block> out(y);
    out = b;
    return;
  }
  for (int64_t i = 0; i < n; ++i) y[i] = b[i];
}

/// Zeroes the padding lanes [n, kLanes) of a tail block.
inline Block keep_first(Block b, int64_t n) {
  for (int64_t i = n; i < kLanes; ++i) b[i] = 0.f;
  return b;
}

inline float max_of(const float* x, int64_t n) {
  constexpr float lowest = -std::numeric_limits<float>::infinity();
  Block acc = Block::Constant(lowest);
  for (int64_t i = 0; i < n; i += kLanes) acc = acc.max(load(x + i, std::min(kLanes, n - i), lowest));
  return acc.maxCoeff();
}

/// y (N) = exp(x - shift); returns the sum of y. y may alias x.
inline float exp_shift_sum(float* y, const float* x, int64_t n, float shift) {
  Block acc = Block::Zero();
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t len = std::min(kLanes, n - i);
    const Block e = keep_first((load(x + i, len, 0.f) - shift).exp(), len);
    store(y + i, e, len);
    acc += e;
  }
  return acc.sum();
}

/// sum of exp(x - shift), nothing stored.
inline float exp_shift_sum(const float* x, int64_t n, float shift) {
  Block acc = Block::Zero();
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t len = std::min(kLanes, n - i);
    acc += keep_first((load(x + i, len, 0.f) - shift).exp(), len);
  }
  return acc.sum();
}

/// y (N) = exp(x - shift) * factor. y may alias x.
inline void exp_shift_scale(float* y, const float* x, int64_t n, float shift, float factor) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t len = std::min(kLanes, n - i);
    store(y + i, (load(x + i, len, 0.f) - shift).exp() * factor, len);
  }
}

}  // namespace lmf::cpu::vec
