// AdamW over a run of the parameter slab (fp32 master weights, fp32 moments), one fused pass:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g²
//   p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)
// the same expression order as the CPU update, so both devices agree to rounding. The global
// gradient norm for clipping is reduce.cu's sum_all with square = true over the gradient slab.
// The controlled form takes the clip factor, the skip verdict and the bias corrections from a
// StepControl in device memory that step_decide fills, so a training step never reads a value back
// to decide whether and how to update (and stays capturable in a CUDA graph).
// Shapes: p, g, m, v (N) — N is the length of one run of parameters sharing a weight decay.
// adamw_update_device_scalars is the same update with lr and the bias corrections read from
// device memory (AdamWStepScalars), for steps captured in a CUDA graph.
#include "common/common.cuh"
#include "adamw_step_scalars.h"
#include "kernels.h"
#include "step_kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

// One element's update, the CPU's expression order; every AdamW kernel below runs this.
__device__ __forceinline__ void adamw_element(float* p, float* m, float* v, int64_t i, float grad, float decay_factor,
                                              float step_size, float beta1, float beta2, float eps,
                                              float bias_correction2_sqrt) {
  const float mi = beta1 * m[i] + (1.f - beta1) * grad;
  const float vi = beta2 * v[i] + (1.f - beta2) * grad * grad;
  m[i] = mi;
  v[i] = vi;
  const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
  p[i] = p[i] * decay_factor - step_size * mi / denom;
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, float decay_factor,
                             float step_size, float beta1, float beta2, float eps,
                             float bias_correction2_sqrt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float grad = g[i];
    adamw_element(p, m, v, i, grad, decay_factor, step_size, beta1, beta2, eps, bias_correction2_sqrt);
  }
}

// The controlled form: lr from the AdamWStepScalars buffer (so a captured step replays with the
// schedule's lr), clip factor, skip verdict and bias corrections from the StepControl that
// step_decide fills. step_size = lr / bc1 and 1 - lr·wd (a product, then a difference:
// __fmul_rn forbids the fused multiply-add) are formed as the host forms them.
__global__ void adamw_controlled_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                                        float weight_decay, float beta1, float beta2, float eps,
                                        const StepControl* control, const AdamWStepScalars* scalars) {
  if (control->skip != kStepApplied) return;  // p, m and v stay as they were
  const float lr = scalars->lr;
  const float decay_factor = 1.f - __fmul_rn(lr, weight_decay);
  const float coef = control->clip_coef;
  const float step_size = lr / control->bias_correction1;
  const float bias_correction2_sqrt = control->bias_correction2_sqrt;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float grad = coef == 1.f ? g[i] : g[i] * coef;  // as the host path's scale_ of the gradients
    adamw_element(p, m, v, i, grad, decay_factor, step_size, beta1, beta2, eps, bias_correction2_sqrt);
  }
}


// adamw_kernel with the per-step scalars read from device memory; kept as its own kernel so the
// by-value path stays exactly as it is. __fmul_rn keeps 1 - lr·wd a product then a difference
// (no fused multiply-add), as the host forms it for the by-value path.
__global__ void adamw_device_scalars_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                                            float weight_decay, float beta1, float beta2, float eps,
                                            const AdamWStepScalars* scalars) {
  const float decay_factor = 1.f - __fmul_rn(scalars->lr, weight_decay);
  const float step_size = scalars->step_size;
  const float bias_correction2_sqrt = scalars->bias_correction2_sqrt;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float grad = g[i];
    adamw_element(p, m, v, i, grad, decay_factor, step_size, beta1, beta2, eps, bias_correction2_sqrt);
  }
}

// The host path's decisions in the host path's arithmetic (double norm, torch's clip rule, the
// LossGuard z-score test in double), so a run that decides here matches one that reads back.
__global__ void step_decide_kernel(StepControl* c, StepRecord* ring, int64_t capacity, float max_norm, float beta1,
                                   float beta2) {
  const double norm = sqrt(double(c->sum_squares));
  const float loss = c->loss;
  int32_t skip = kStepApplied;
  if (!isfinite(loss)) {
    skip = kSkipNonFiniteLoss;
  } else if (c->spike_zscore > 0 && c->spike_sd > 0 && (loss - c->spike_mean) / c->spike_sd > c->spike_zscore) {
    skip = kSkipSpike;
  } else if (!isfinite(norm)) {
    skip = kSkipNonFiniteNorm;
  }
  const double coef = double(max_norm) / (norm + 1e-6);
  c->clip_coef = max_norm > 0 && coef < 1.0 ? float(coef) : 1.f;
  c->grad_norm = float(norm);
  c->skip = skip;
  if (skip == kStepApplied) {
    const double t = double(++c->applied);
    c->bias_correction1 = float(1.0 - pow(double(beta1), t));
    c->bias_correction2_sqrt = float(sqrt(1.0 - pow(double(beta2), t)));
  }
  StepRecord* record = ring + c->decided % capacity;
  ++c->decided;
  record->loss = loss;
  record->grad_norm = float(norm);
  record->skip = skip;
  record->applied_low = int32_t(c->applied);
}

}  // namespace

void adamw_update_controlled(float* p, const float* g, float* m, float* v, int64_t n, float weight_decay,
                             float beta1, float beta2, float eps, const StepControl* control,
                             const AdamWStepScalars* scalars, cudaStream_t stream) {
  if (n == 0) return;
  adamw_controlled_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, g, m, v, n, weight_decay, beta1,
                                                                          beta2, eps, control, scalars);
  LMF_CUDA_LAUNCH_CHECK();
}

void step_decide(StepControl* control, StepRecord* ring, int64_t capacity, float max_norm, float beta1, float beta2,
                 cudaStream_t stream) {
  step_decide_kernel<<<1, 1, 0, stream>>>(control, ring, capacity, max_norm, beta1, beta2);
  LMF_CUDA_LAUNCH_CHECK();
}

void adamw_update_device_scalars(float* p, const float* g, float* m, float* v, int64_t n, float weight_decay,
                                 float beta1, float beta2, float eps, const AdamWStepScalars* scalars,
                                 cudaStream_t stream) {
  if (n == 0) return;
  adamw_device_scalars_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, g, m, v, n, weight_decay, beta1,
                                                                             beta2, eps, scalars);
  LMF_CUDA_LAUNCH_CHECK();
}

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float decay_factor, float lr,
                  float beta1, float beta2, float eps, float bias_correction1,
                  float bias_correction2_sqrt, cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(
      p, g, m, v, n, decay_factor, lr / bias_correction1, beta1, beta2, eps, bias_correction2_sqrt);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
