// Token batches on their way to the training device. On the CPU a batch is used as the loader made
// it. On a GPU each batch is copied into one of two page-locked host buffers and queued host->device
// on the compute stream (the legacy default stream every kernel runs on), so the host never waits
// for the GPU to take a batch; a buffer is refilled only once the copy that last read it has run.
#pragma once
#include <cstddef>

#include "lmforge/core/device.h"
#include "lmforge/core/tensor.h"
#include "lmforge/data/loader.h"

namespace lmf::train {

class BatchUpload {
 public:
  explicit BatchUpload(Device device) : device_(device) {}
  ~BatchUpload();
  BatchUpload(const BatchUpload&) = delete;
  BatchUpload& operator=(const BatchUpload&) = delete;

  /// `batch` (inputs, targets: (B, T) i32 on the CPU) on the device: as is on the CPU, otherwise
  /// two views of one fresh (2, B, T) device tensor whose copy is queued, not yet finished.
  data::Batch to_device(const data::Batch& batch) { return upload(batch, false); }
  /// As to_device, but every call copies into the same (2, B, T) device tensor (made by the first
  /// call; a later batch of another shape is an lmf::Error): the static input a step captured in a
  /// CUDA graph reads. The copy is queued on the compute stream, after the work queued before it
  /// (the previous replay, which read the tensor) and before the next.
  data::Batch to_static(const data::Batch& batch) { return upload(batch, true); }

 private:
  data::Batch upload(const data::Batch& batch, bool into_static);
  struct Staging {
    void* host = nullptr;   // page-locked
    std::size_t bytes = 0;
    void* copied = nullptr; // cudaEvent_t recorded after the last copy out of `host`
  };
  Device device_;
  Staging staging_[2];
  int next_ = 0;
  Tensor static_;  // (2, B, T) i32 on the device: to_static's destination
};

}  // namespace lmf::train
