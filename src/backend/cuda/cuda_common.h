// Helpers shared by the CUDA host glue: run on the tensor's GPU, and take workspace from that
// GPU's caching allocator (so a training step never reaches cudaMalloc once the cache is warm).
// Every kernel is launched on the legacy default stream, which orders it with the cudaMemcpy calls
// of lmf::copy_bytes without any extra synchronisation.
#pragma once
#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels.h"
#include "lmforge/core/tensor.h"

namespace lmf::cuda {

inline constexpr cudaStream_t kStream = nullptr;

/// Makes `device` current for the scope; restores the previous device.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device) {
    LMF_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device.index) LMF_CUDA_CHECK(cudaSetDevice(device.index));
    changed_ = previous_ != device.index;
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

/// Scratch memory from the device's cache; returned when the tensor goes out of scope. Kernels
/// that use it are queued on the one stream, so reuse by a later allocation is ordered after them.
inline Tensor workspace(Device device, int64_t bytes) {
  return Tensor::empty({(bytes + 3) / 4 > 0 ? (bytes + 3) / 4 : 1}, DType::f32, device);
}

}  // namespace lmf::cuda
