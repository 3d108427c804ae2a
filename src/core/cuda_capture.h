// What the backends ask about CUDA graph capture (lmforge/core/cuda_graph.h): which stream a
// device's work goes on, and whether something that cannot be captured (a host read, a host
// write, a synchronising call) is about to run, so it can fail with a message naming itself.
#pragma once
#include "lmforge/core/device.h"

#ifdef LMF_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace lmf::detail {

/// Whether a CudaGraph is capturing work on `device` (false for the CPU and without CUDA).
bool cuda_capturing(Device device);
/// Throws lmf::Error saying that `what` cannot run inside a CUDA graph capture when one is active
/// on `device`.
void check_not_capturing(Device device, const char* what);

#ifdef LMF_WITH_CUDA
/// The stream work on GPU `index` is queued on: the legacy default stream, or while a CudaGraph
/// captures on that GPU, the graph's own stream.
cudaStream_t cuda_stream(int index);
/// cuda_stream of the calling thread's current GPU.
cudaStream_t current_cuda_stream();
#endif

}  // namespace lmf::detail
