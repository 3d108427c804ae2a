// The per-step values a GPU training step keeps on the device (loss, gradient norm, clip factor,
// skip verdict, AdamW's step count and bias corrections), shared by the kernels that write and read
// them and the host code that lays them out. Plain C++ so that both nvcc and the host compiler see it.
#pragma once
#include <cstdint>

namespace lmf::kernels {

/// Why a step's update was skipped on the device (0: applied).
enum StepSkipCode : int32_t { kStepApplied = 0, kSkipNonFiniteLoss = 1, kSkipSpike = 2, kSkipNonFiniteNorm = 3 };

/// One step's state, in device memory. The trainer writes `loss`, the norm reduction writes
/// `sum_squares`, step_decide fills the rest, and the controlled AdamW update reads it.
struct StepControl {
  double spike_mean = 0;      // the loss guard's window mean as of the last host read
  double spike_sd = 0;        // and its standard deviation
  float spike_zscore = 0;     // <= 0: no spike test (disabled, or the window not warm yet)
  float loss = 0;             // the step's loss, the same on every rank
  float sum_squares = 0;      // of every gradient, all ranks
  float grad_norm = 0;        // sqrt(sum_squares)
  float clip_coef = 1;        // the gradients' multiplier in the update (1: not clipped)
  float bias_correction1 = 1;
  float bias_correction2_sqrt = 1;
  int32_t skip = 0;           // a StepSkipCode
  int64_t applied = 0;        // updates applied so far, this step's included: AdamW's t
  int64_t decided = 0;        // steps decided so far: the next record goes to ring slot decided % capacity
};

/// One step as the host reads it back at a log interval. The ring's write index is
/// StepControl::decided, kept and advanced on the device, so a step replayed from a CUDA graph
/// writes the next slot without the host naming it.
struct StepRecord {
  float loss;
  float grad_norm;
  int32_t skip;
  int32_t applied_low;  // low 32 bits of StepControl::applied after the step (a consistency check)
};

}  // namespace lmf::kernels
