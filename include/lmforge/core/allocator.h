// Per-device caching allocators. Freed blocks go back to a size-bucketed cache instead of the
// system, so a steady-state training step allocates nothing from the OS (or from cudaMalloc).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "lmforge/core/device.h"

namespace lmf {

struct AllocatorStats {
  std::size_t in_use_bytes = 0;    ///< bytes handed out and not yet returned
  std::size_t cached_bytes = 0;    ///< bytes held in the cache, ready for reuse
  std::size_t peak_bytes = 0;      ///< high-water mark of in_use_bytes
  std::size_t system_allocs = 0;   ///< calls that reached the system allocator
};

/// Allocates `nbytes` (64-byte aligned) on `device` from that device's cache.
void* device_allocate(Device device, std::size_t nbytes);
/// Returns a block obtained from device_allocate.
void device_free(Device device, void* ptr, std::size_t nbytes);
/// Statistics of the device's caching allocator.
AllocatorStats allocator_stats(Device device);
/// Releases every cached block of the device back to the system.
void empty_cache(Device device);

/// Contiguous bytes on one device. Owned storages return their block to the caching allocator;
/// wrapped storages (for example a memory-mapped file) call their own deleter.
class Storage {
 public:
  Storage(Device device, std::size_t nbytes);
  Storage(void* data, std::size_t nbytes, Device device, std::function<void(void*)> deleter);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
  std::function<void(void*)> deleter_;
};

}  // namespace lmf
