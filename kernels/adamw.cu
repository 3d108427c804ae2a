// AdamW over a run of the parameter slab (fp32 master weights, fp32 moments), one fused pass:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g²
//   p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)
// the same expression order as the CPU update, so both devices agree to rounding. The global
// gradient norm for clipping is reduce.cu's sum_all with square = true over the gradient slab.
// Shapes: p, g, m, v (N) — N is the length of one run of parameters sharing a weight decay.
// adamw_update_device_scalars is the same update with lr and the bias corrections read from
// device memory (AdamWStepScalars), for steps captured in a CUDA graph.
#include "common/common.cuh"
#include "adamw_step_scalars.h"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, float decay_factor,
                             float step_size, float beta1, float beta2, float eps,
                             float bias_correction2_sqrt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float grad = g[i];
    const float mi = beta1 * m[i] + (1.f - beta1) * grad;
    const float vi = beta2 * v[i] + (1.f - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
    p[i] = p[i] * decay_factor - step_size * mi / denom;
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
    const float mi = beta1 * m[i] + (1.f - beta1) * grad;
    const float vi = beta2 * v[i] + (1.f - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
    p[i] = p[i] * decay_factor - step_size * mi / denom;
  }
}

}  // namespace

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
