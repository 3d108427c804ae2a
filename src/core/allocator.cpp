// Caching allocators, one per device. A training step asks for the same sizes every time, so
// returned blocks are kept in a best-fit cache (a block at most twice the request is reused) and
// the system allocator (aligned_alloc or cudaMalloc) is reached only while the cache warms up.
#include "lmforge/core/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

#include "lmforge/core/error.h"

#ifdef LMF_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace lmf {
namespace {

constexpr std::size_t kAlignment = 64;
constexpr std::size_t kRounding = 512;

class CachingAllocator {
 public:
  explicit CachingAllocator(Device device) : device_(device) {}
  ~CachingAllocator() { release_cache(); }

  void* allocate(std::size_t nbytes) {
    const std::size_t size = round_up(nbytes == 0 ? 1 : nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(size);
    void* ptr = nullptr;
    std::size_t block = size;
    if (it != free_.end() && it->first <= 2 * size) {
      block = it->first;
      ptr = it->second;
      free_.erase(it);
      stats_.cached_bytes -= block;
    } else {
      ptr = system_allocate(size);
      if (!ptr) {  // out of memory: give the cache back and try once more
        release_cache_locked();
        ptr = system_allocate(size);
      }
      LMF_CHECK(ptr, "out of memory on ", device_.str(), " allocating ", nbytes, " bytes (",
                stats_.in_use_bytes, " bytes in use)");
      ++stats_.system_allocs;
    }
    block_size_[ptr] = block;
    stats_.in_use_bytes += block;
    if (stats_.in_use_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.in_use_bytes;
    return ptr;
  }

  void deallocate(void* ptr) {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = block_size_.find(ptr);
    if (it == block_size_.end()) return;  // not ours; never happens for storages we created
    const std::size_t block = it->second;
    block_size_.erase(it);
    stats_.in_use_bytes -= block;
    stats_.cached_bytes += block;
    free_.emplace(block, ptr);
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void release_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cache_locked();
  }

 private:
  static std::size_t round_up(std::size_t n) { return (n + kRounding - 1) / kRounding * kRounding; }

  void* system_allocate(std::size_t size) {
    if (device_.is_cpu()) return std::aligned_alloc(kAlignment, size);
#ifdef LMF_WITH_CUDA
    void* ptr = nullptr;
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device_.index);
    const cudaError_t status = cudaMalloc(&ptr, size);
    cudaSetDevice(previous);
    if (status != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return ptr;
#else
    return nullptr;
#endif
  }

  void system_free(void* ptr) {
    if (device_.is_cpu()) {
      std::free(ptr);
      return;
    }
#ifdef LMF_WITH_CUDA
    cudaFree(ptr);
#endif
  }

  void release_cache_locked() {
    for (auto& [size, ptr] : free_) system_free(ptr);
    free_.clear();
    stats_.cached_bytes = 0;
  }

  Device device_;
  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;
  std::unordered_map<void*, std::size_t> block_size_;
  AllocatorStats stats_;
};

CachingAllocator& allocator_for(Device device) {
  static CachingAllocator* cpu = new CachingAllocator(Device::cpu());  // lives until exit
  if (device.is_cpu()) return *cpu;
  LMF_CHECK(cuda_available(),
            "device ", device.str(), " requested but ",
#ifdef LMF_WITH_CUDA
            "no CUDA GPU is visible on this machine"
#else
            "this build of lmforge has no CUDA support (configure with -DLMF_CUDA=ON)"
#endif
  );
  LMF_CHECK(device.index >= 0 && device.index < cuda_device_count(), "device ", device.str(),
            " does not exist (", cuda_device_count(), " GPUs visible)");
  static std::mutex mutex;
  static std::map<int, CachingAllocator*> gpus;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = gpus[device.index];
  if (!slot) slot = new CachingAllocator(device);
  return *slot;
}

}  // namespace

void* device_allocate(Device device, std::size_t nbytes) {
  return allocator_for(device).allocate(nbytes);
}
void device_free(Device device, void* ptr, std::size_t) { allocator_for(device).deallocate(ptr); }
AllocatorStats allocator_stats(Device device) { return allocator_for(device).stats(); }
void empty_cache(Device device) { allocator_for(device).release_cache(); }

Storage::Storage(Device device, std::size_t nbytes)
    : data_(device_allocate(device, nbytes)), nbytes_(nbytes), device_(device) {}

Storage::Storage(void* data, std::size_t nbytes, Device device, std::function<void(void*)> deleter)
    : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}

Storage::~Storage() {
  if (deleter_) {
    deleter_(data_);
  } else {
    device_free(device_, data_, nbytes_);
  }
}

}  // namespace lmf
