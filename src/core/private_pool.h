// Private pools of the caching allocators, the memory side of CUDA graph capture
// (lmforge/core/cuda_graph.h). Usable on any device, which is how they are tested without a GPU.
// Private to the library: a custom loop reaches them through CudaGraph.
#pragma once
#include <cstddef>
#include <cstdint>

#include "lmforge/core/device.h"

namespace lmf::detail {

// While a pool is active on a device, that device's allocations are served from the pool's free
// blocks first, then from the shared cache or the system, and the block then belongs to the pool;
// every block freed meanwhile goes into the pool, whoever allocated it. A pool's blocks serve
// nothing but later activations of the same pool and are never returned to the system, so
// addresses recorded while it was active stay valid and unshared until release_private_pool:
// then its free blocks join the shared cache, and its blocks still in use join it when freed.
// One pool active at a time per device. While one is active, empty_cache throws (freeing would
// synchronise a capture) and an allocation that fails does not release the cache to retry.

/// A new pool id (never 0).
uint64_t create_private_pool(Device device);
/// Makes `pool` the device's active pool; throws if another is active or `pool` is unknown.
void begin_private_pool(Device device, uint64_t pool);
/// Ends the device's active pool; its blocks stay reserved for it.
void end_private_pool(Device device);
/// Gives the pool's blocks back to the shared cache (ending it first if it is active).
void release_private_pool(Device device, uint64_t pool);
/// The pool active on the device, 0 when none.
uint64_t active_private_pool(Device device);
/// Free bytes held by the device's private pools (not counted in AllocatorStats::cached_bytes).
std::size_t private_pool_bytes(Device device);

}  // namespace lmf::detail
