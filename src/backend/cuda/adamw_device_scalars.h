// CUDA entry points of AdamW with its per-step scalars in device memory (kernels/adamw.cu's
// adamw_update_device_scalars), for steps captured in a CUDA graph. Apart from cuda_backend.h,
// whose by-value adamw_update stays as it is; in a build without CUDA each is a stub that throws.
#pragma once
#include <cstdint>

#include "lmforge/core/device.h"
#include "lmforge/core/error.h"

#ifdef LMF_WITH_CUDA
#define LMF_CUDA_ENTRY(signature) signature;
#else
#define LMF_CUDA_ENTRY(signature) \
  [[noreturn]] inline signature { throw ::lmf::Error("CUDA backend not available in this build"); }
#endif

namespace lmf::cuda {

/// As adamw_update with lr, lr / bias_correction1 and bias_correction2_sqrt read from `scalars`,
/// three f32 in device memory (so a CUDA graph replays with each step's values).
LMF_CUDA_ENTRY(void adamw_update_device_scalars(Device device, float* p, const float* g, float* m, float* v,
                                                int64_t n, float weight_decay, float beta1, float beta2,
                                                float eps, const float* scalars))
/// Writes `values` (three f32 on the host) into `scalars` on the device, queued on its stream
/// (no synchronisation). Throws inside a CUDA graph capture.
LMF_CUDA_ENTRY(void write_adamw_scalars(Device device, float* scalars, const float* values))

}  // namespace lmf::cuda

#undef LMF_CUDA_ENTRY
