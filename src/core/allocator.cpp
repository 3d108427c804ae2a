// Caching allocators, one per device. A training step asks for the same sizes every time, so
// returned blocks are kept in a best-fit cache (a block at most twice the request is reused) and
// the system allocator (aligned_alloc or cudaMalloc) is reached only while the cache warms up.
// Private pools are further free lists beside the shared one, each owned by a CUDA graph.
#include "lmforge/core/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

#include "core/private_pool.h"
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
  ~CachingAllocator() { release_cache_locked(); }

  void* allocate(std::size_t nbytes) {
    const std::size_t size = round_up(nbytes == 0 ? 1 : nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    void* ptr = nullptr;
    std::size_t block = size;
    if (active_pool_ != 0 && take_fit(pools_.at(active_pool_), size, ptr, block)) {
      pool_bytes_ -= block;
    } else if (take_fit(free_, size, ptr, block)) {
      stats_.cached_bytes -= block;
    } else {
      block = size;
      ptr = system_allocate(size);
      if (!ptr && active_pool_ == 0) {  // out of memory: give the cache back and try once more
        release_cache_locked();
        ptr = system_allocate(size);
      }
      LMF_CHECK(ptr, "out of memory on ", device_.str(), " allocating ", nbytes, " bytes (",
                stats_.in_use_bytes, " bytes in use",
                active_pool_ != 0 ? "; during CUDA graph capture the cache cannot be released" : "", ")");
      ++stats_.system_allocs;
    }
    blocks_[ptr] = {block, active_pool_};
    stats_.in_use_bytes += block;
    if (stats_.in_use_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.in_use_bytes;
    return ptr;
  }

  void deallocate(void* ptr) {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.find(ptr);
    if (it == blocks_.end()) return;  // not ours; never happens for storages we created
    const auto [block, owner] = it->second;
    blocks_.erase(it);
    stats_.in_use_bytes -= block;
    // A block freed while a pool is active may still be read by the work being recorded, so it
    // joins the pool whoever allocated it.
    const uint64_t pool = owner != 0 ? owner : active_pool_;
    if (pool != 0) {
      pools_.at(pool).emplace(block, ptr);
      pool_bytes_ += block;
    } else {
      free_.emplace(block, ptr);
      stats_.cached_bytes += block;
    }
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void release_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    LMF_CHECK(active_pool_ == 0, "empty_cache on ", device_.str(),
              " during CUDA graph capture: freeing device memory would synchronise the capture");
    release_cache_locked();
  }

  uint64_t create_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    pools_[++last_pool_];
    return last_pool_;
  }

  void begin_pool(uint64_t pool) {
    std::lock_guard<std::mutex> lock(mutex_);
    LMF_CHECK(pools_.count(pool), "private pool ", pool, " does not exist on ", device_.str());
    LMF_CHECK(active_pool_ == 0, "private pool ", pool, " cannot start on ", device_.str(), ": pool ",
              active_pool_, " is active (one CUDA graph capture at a time per device)");
    active_pool_ = pool;
  }

  void end_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    active_pool_ = 0;
  }

  void release_pool(uint64_t pool) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = pools_.find(pool);
    if (it == pools_.end()) return;
    if (active_pool_ == pool) active_pool_ = 0;
    for (auto& [size, ptr] : it->second) {
      free_.emplace(size, ptr);
      stats_.cached_bytes += size;
      pool_bytes_ -= size;
    }
    pools_.erase(it);
    for (auto& [ptr, info] : blocks_)
      if (info.pool == pool) info.pool = 0;  // in use: back to the shared cache when freed
  }

  std::size_t pool_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return pool_bytes_;
  }

  uint64_t active_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    return active_pool_;
  }

 private:
  using FreeList = std::multimap<std::size_t, void*>;
  struct BlockInfo {
    std::size_t size;
    uint64_t pool;  // 0: the shared cache
  };

  static std::size_t round_up(std::size_t n) { return (n + kRounding - 1) / kRounding * kRounding; }

  // Best fit: the smallest free block of at least `size`, if it is at most twice the request.
  static bool take_fit(FreeList& list, std::size_t size, void*& ptr, std::size_t& block) {
    auto it = list.lower_bound(size);
    if (it == list.end() || it->first > 2 * size) return false;
    block = it->first;
    ptr = it->second;
    list.erase(it);
    return true;
  }

  void* system_allocate(std::size_t size) {
    if (device_.is_cpu()) return std::aligned_alloc(kAlignment, size);
#ifdef LMF_WITH_CUDA
    void* ptr = nullptr;
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device_.index);
    // cudaMalloc is not stream-ordered, so a capture in global mode forbids it; the pool keeps the
    // block for the graph's lifetime, which is exactly what makes it safe here.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    if (active_pool_ != 0) cudaThreadExchangeStreamCaptureMode(&mode);
    const cudaError_t status = cudaMalloc(&ptr, size);
    if (active_pool_ != 0) cudaThreadExchangeStreamCaptureMode(&mode);
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
  FreeList free_;
  std::unordered_map<void*, BlockInfo> blocks_;
  std::map<uint64_t, FreeList> pools_;  // free blocks of each private pool
  uint64_t active_pool_ = 0;
  uint64_t last_pool_ = 0;
  std::size_t pool_bytes_ = 0;  // free bytes in pools_, not in stats_.cached_bytes
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
namespace detail {
uint64_t create_private_pool(Device device) { return allocator_for(device).create_pool(); }
void begin_private_pool(Device device, uint64_t pool) { allocator_for(device).begin_pool(pool); }
void end_private_pool(Device device) { allocator_for(device).end_pool(); }
void release_private_pool(Device device, uint64_t pool) { allocator_for(device).release_pool(pool); }
uint64_t active_private_pool(Device device) { return allocator_for(device).active_pool(); }
std::size_t private_pool_bytes(Device device) { return allocator_for(device).pool_bytes(); }
}  // namespace detail

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
