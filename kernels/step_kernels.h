// Launchers of the device-controlled optimizer step (adamw.cu): the one-thread decision kernel and
// the AdamW update that reads its verdict, clip factor and bias corrections from device memory.
// Apart from kernels.h so that the many files including that header are not rebuilt for these.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/step_control.h"

namespace lmf::kernels {

struct AdamWStepScalars;
/// AdamW as adamw_update, with the clip factor, skip verdict and bias corrections read from
/// `control` (device memory, filled by step_decide) and lr from `scalars` (written before each
/// step or each replay of a captured one): nothing is read back to the host, and a skipped step
/// leaves p, m and v untouched. g is multiplied by control->clip_coef as it is read.
void adamw_update_controlled(float* p, const float* g, float* m, float* v, int64_t n, float weight_decay,
                             float beta1, float beta2, float eps, const StepControl* control,
                             const AdamWStepScalars* scalars, cudaStream_t stream);
/// One thread on the device: from control->loss and control->sum_squares, the norm, the clip factor
/// (torch's max_norm / (norm + 1e-6) when below 1; max_norm <= 0: none), the skip verdict (a
/// non-finite loss, a spike against the reference in control, a non-finite norm, in that order),
/// AdamW's t and bias corrections for an applied step; then the step's record into
/// ring[control->decided % capacity], and control->decided advances (the write index lives on the
/// device, so a replayed graph writes the next slot).
void step_decide(StepControl* control, StepRecord* ring, int64_t capacity, float max_norm, float beta1, float beta2,
                 cudaStream_t stream);

}  // namespace lmf::kernels
