// AdamW with its per-step scalars (lr, step size, bias correction) read from device memory, so a
// step captured in a CUDA graph replays with the values written before each launch rather than
// those of the capture. Its own header beside kernels.h's by-value adamw_update, which it leaves as is.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace lmf::kernels {

/// The scalars of one AdamW step that change from step to step, in device memory: the update
/// reads them there, so a CUDA graph replays with the values written before each launch rather
/// than those of the capture.
struct AdamWStepScalars {
  float lr;
  float step_size;              ///< lr / bias_correction1
  float bias_correction2_sqrt;  ///< sqrt(1 - beta2^t)
};
/// As adamw_update with lr, step size and bias correction read from `scalars` (device memory);
/// decay_factor = 1 - lr·weight_decay is formed on the device.
void adamw_update_device_scalars(float* p, const float* g, float* m, float* v, int64_t n, float weight_decay,
                                 float beta1, float beta2, float eps, const AdamWStepScalars* scalars,
                                 cudaStream_t stream);

}  // namespace lmf::kernels
