// Pinned double-buffered host->device copies of token batches (see batch_upload.h). A copy from
// pageable memory would make the host wait for the GPU to drain its queue before every
// micro-batch; from page-locked memory it is queued like a kernel. to_static writes one device
// tensor every time, for a step captured in a CUDA graph, which reads fixed addresses.
#include "train/batch_upload.h"

#include <cstring>

#ifdef LMF_WITH_CUDA
#include "backend/cuda/cuda_common.h"
#endif

namespace lmf::train {

#ifdef LMF_WITH_CUDA

BatchUpload::~BatchUpload() {
  // No throwing here, and no CUDA call at all for a CPU run (a CUDA build on a machine without a GPU).
  if (!staging_[0].copied && !staging_[1].copied) return;
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) return;
  cudaSetDevice(device_.index);
  for (Staging& s : staging_) {
    if (s.copied) {
      cudaEventSynchronize(static_cast<cudaEvent_t>(s.copied));
      cudaEventDestroy(static_cast<cudaEvent_t>(s.copied));
    }
    if (s.host) cudaFreeHost(s.host);
  }
  cudaSetDevice(previous);
}

data::Batch BatchUpload::upload(const data::Batch& batch, bool into_static) {
  if (device_.is_cpu()) return batch;
  const Tensor inputs = batch.inputs.contiguous_copy(), targets = batch.targets.contiguous_copy();
  LMF_CHECK(inputs.device().is_cpu() && inputs.dtype() == DType::i32 && targets.dtype() == DType::i32 &&
                inputs.shape() == targets.shape(),
            "BatchUpload: expected two (B, T) i32 CPU tensors");
  detail::check_not_capturing(device_, "BatchUpload::to_device (a batch copied up from the host)");
  cuda::DeviceGuard guard(device_);
  Staging& s = staging_[next_];
  next_ = 1 - next_;
  const std::size_t half = inputs.nbytes(), bytes = 2 * half;
  if (!s.copied) {
    cudaEvent_t event = nullptr;
    LMF_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    s.copied = event;
  }
  LMF_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(s.copied)));  // its last copy has run
  if (s.bytes < bytes) {
    if (s.host) LMF_CUDA_CHECK(cudaFreeHost(s.host));
    s.host = nullptr;
    LMF_CUDA_CHECK(cudaHostAlloc(&s.host, bytes, cudaHostAllocDefault));
    s.bytes = bytes;
  }
  std::memcpy(s.host, inputs.raw_data(), half);
  std::memcpy(static_cast<char*>(s.host) + half, targets.raw_data(), half);
  Shape both = inputs.shape();
  both.insert(both.begin(), 2);
  if (into_static && !static_.defined()) static_ = Tensor::empty(both, DType::i32, device_);
  LMF_CHECK(!into_static || static_.shape() == both, "BatchUpload::to_static: a batch of shape ",
            shape_str(inputs.shape()), " into the static input of shape ", shape_str(static_.shape()));
  const Tensor device = into_static ? static_ : Tensor::empty(both, DType::i32, device_);  // (2, B, T)
  LMF_CUDA_CHECK(cudaMemcpyAsync(device.raw_data(), s.host, bytes, cudaMemcpyHostToDevice, cuda::stream()));
  LMF_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(s.copied), cuda::stream()));
  const int64_t n = inputs.numel();
  return {Tensor::view_of(device.storage(), inputs.shape(), DType::i32, 0),
          Tensor::view_of(device.storage(), inputs.shape(), DType::i32, n)};
}

#else

BatchUpload::~BatchUpload() = default;

data::Batch BatchUpload::upload(const data::Batch& batch, bool) {
  LMF_CHECK(device_.is_cpu(), "training on ", device_.str(), " needs a build with CUDA");
  return batch;
}

#endif

}  // namespace lmf::train
