// Helpers shared by the CUDA host glue: run on the tensor's GPU, and take workspace from that
// GPU's caching allocator (so a training step never reaches cudaMalloc once the cache is warm).
// Every kernel is launched on stream(): the legacy default stream, which orders it with the
// cudaMemcpy calls of lmf::copy_bytes without any extra synchronisation, or while a CudaGraph
// captures on the GPU, that graph's stream (a blocking one, so the ordering still holds).
#pragma once
#include <cuda_runtime.h>

#include "common/check.h"
#include "core/cuda_capture.h"
#include "kernels.h"
#include "lmforge/core/tensor.h"

namespace lmf::cuda {

/// The stream of the current GPU (the one DeviceGuard selected).
inline cudaStream_t stream() { return detail::current_cuda_stream(); }

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

/// The kernels' name for a dtype (the enums share their order).
inline kernels::ElemType elem_type(DType dtype) { return static_cast<kernels::ElemType>(static_cast<int>(dtype)); }

/// Scratch memory from the device's cache; returned when the tensor goes out of scope. Kernels
/// that use it are queued on the one stream, so reuse by a later allocation is ordered after them.
inline Tensor workspace(Device device, int64_t bytes) {
  return Tensor::empty({(bytes + 3) / 4 > 0 ? (bytes + 3) / 4 : 1}, DType::f32, device);
}

}  // namespace lmf::cuda
