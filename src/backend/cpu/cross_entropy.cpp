// Fused softmax + negative log-likelihood over the vocabulary: logits (N, V), targets (N) -> the
// mean loss, the counted rows and the log-sum-exp (N), the same outputs as the CUDA kernel. The probabilities are never stored; the backward
// recomputes them from logits and lse. Rows whose target is ignore_index give loss 0 and grad 0.
// Gradient of the mean loss: dlogits = (softmax(logits) - onehot(target)) * dloss / count.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {

void cross_entropy_forward(float* loss, float* count, float* lse, const float* logits, const int32_t* targets,
                           int64_t n, int64_t v, int32_t ignore_index) {
  float* losses = vec::thread_scratch<float>(2, static_cast<std::size_t>(n));  // (N)
  int64_t counted = 0;
#pragma omp parallel for schedule(static) reduction(+ : counted) if (n * v > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float* x = logits + i * v;  // (V)
    const float m = vec::max_of(x, v);
    lse[i] = m + std::log(vec::exp_shift_sum(x, v, m));
    if (targets[i] == ignore_index) {
      losses[i] = 0.f;
    } else {
      losses[i] = lse[i] - x[targets[i]];
      ++counted;
    }
  }
  const double total = sum_all(losses, n);
  loss[0] = counted ? static_cast<float>(total / counted) : 0.f;
  count[0] = static_cast<float>(counted);
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            const float* dloss, const float* count, int64_t n, int64_t v, int32_t ignore_index) {
  const float dloss_scale = count[0] != 0.f ? dloss[0] / count[0] : 0.f;
#pragma omp parallel for schedule(static) if (n * v > 16384)
  for (int64_t i = 0; i < n; ++i) {
    float* d = dlogits + i * v;  // (V)
    if (targets[i] == ignore_index) {
      std::fill(d, d + v, 0.f);
      continue;
    }
    vec::exp_shift_scale(d, logits + i * v, v, lse[i], dloss_scale);
    d[targets[i]] -= dloss_scale;
  }
}

}  // namespace lmf::cpu
