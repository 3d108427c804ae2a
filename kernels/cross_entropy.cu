// Fused softmax + negative log-likelihood over the vocabulary: logits (N, V), targets (N).
// Forward: one block per row walks V once with an online (max, sum) per thread, then combines them
// in the block, giving lse (N) and the row loss lse - logit[target]; a single block then averages
// the row losses over rows that are not ignore_index, on the device (loss and count stay there, so
// a step needs no host sync). No (N, V) probability tensor is kept: the backward recomputes
//   dlogits = (exp(logit - lse) - onehot(target)) * dloss / count        (written; 0 on ignored rows)
// straight from the logits and lse, one block per row. The logits are f32 or bf16 storage (templates,
// f32 math): bf16 logits are read in place in both passes, never widened to an (N, V) f32 copy.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 512;

template <class TL>
__global__ void cross_entropy_rows_kernel(float* losses, float* lse, const TL* logits,
                                          const int32_t* targets, int64_t v, int32_t ignore_index) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const TL* x = logits + row * v;  // (V)
  float m = -INFINITY, s = 0.f;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const float xj = to_float(x[j]);
    if (xj > m) {
      s = s * expf(m - xj) + 1.f;
      m = xj;
    } else {
      s += expf(xj - m);
    }
  }
  const float block_m = block_max(m, scratch);
  const float total = block_sum(m == -INFINITY ? 0.f : s * expf(m - block_m), scratch);
  if (threadIdx.x == 0) {
    const float l = block_m + logf(total);
    lse[row] = l;
    const int32_t t = targets[row];
    losses[row] = t == ignore_index ? 0.f : l - to_float(x[t]);
  }
}

__global__ void cross_entropy_mean_kernel(float* loss, float* count, const float* losses,
                                          const int32_t* targets, int64_t n, int32_t ignore_index) {
  __shared__ float scratch[32];
  float s = 0.f, c = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    s += losses[i];
    c += targets[i] == ignore_index ? 0.f : 1.f;
  }
  s = block_sum(s, scratch);
  c = block_sum(c, scratch);  // exact: integers below 2^24
  if (threadIdx.x == 0) {
    loss[0] = c > 0.f ? s / c : 0.f;
    count[0] = c;
  }
}

template <class TL>
__global__ void cross_entropy_backward_kernel(float* dlogits, const TL* logits, const float* lse,
                                              const int32_t* targets, const float* dloss,
                                              const float* count, int64_t v, int32_t ignore_index) {
  const int64_t row = blockIdx.x;
  const int32_t t = targets[row];
  const float c = count[0];
  const float scale = (t == ignore_index || c == 0.f) ? 0.f : dloss[0] / c;
  const float l = lse[row];
  const TL* x = logits + row * v;
  float* d = dlogits + row * v;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const float p = expf(to_float(x[j]) - l) * scale;
    d[j] = j == t ? p - scale : p;
  }
}

}  // namespace

void cross_entropy_forward_typed(float* loss, float* count, float* losses, float* lse, const void* logits,
                                 ElemType logits_type, const int32_t* targets, int64_t n, int64_t v,
                                 int32_t ignore_index, cudaStream_t stream) {
  const bool l16 = storage_is_bf16(logits_type, "cross_entropy_forward", "logits");
  if (n > 0) {
    check_grid("cross_entropy_forward", "B*T (rows)", n, kMaxGridX);
    with_storage(l16, [&](auto tl) {
      using TL = decltype(tl);
      cross_entropy_rows_kernel<TL><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
          losses, lse, static_cast<const TL*>(logits), targets, v, ignore_index);
    });
    LMF_CUDA_LAUNCH_CHECK();
  }
  cross_entropy_mean_kernel<<<1, 1024, 0, stream>>>(loss, count, losses, targets, n, ignore_index);
  LMF_CUDA_LAUNCH_CHECK();
}

void cross_entropy_backward_typed(float* dlogits, const void* logits, ElemType logits_type, const float* lse,
                                  const int32_t* targets, const float* dloss, const float* count, int64_t n,
                                  int64_t v, int32_t ignore_index, cudaStream_t stream) {
  const bool l16 = storage_is_bf16(logits_type, "cross_entropy_backward", "logits");
  if (n == 0) return;
  check_grid("cross_entropy_backward", "B*T (rows)", n, kMaxGridX);
  with_storage(l16, [&](auto tl) {
    using TL = decltype(tl);
    cross_entropy_backward_kernel<TL><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        dlogits, static_cast<const TL*>(logits), lse, targets, dloss, count, v, ignore_index);
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void cross_entropy_forward(float* loss, float* count, float* losses, float* lse, const float* logits,
                           const int32_t* targets, int64_t n, int64_t v, int32_t ignore_index,
                           cudaStream_t stream) {
  cross_entropy_forward_typed(loss, count, losses, lse, logits, ElemType::f32, targets, n, v, ignore_index, stream);
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            const float* dloss, const float* count, int64_t n, int64_t v,
                            int32_t ignore_index, cudaStream_t stream) {
  cross_entropy_backward_typed(dlogits, logits, ElemType::f32, lse, targets, dloss, count, n, v, ignore_index,
                               stream);
}

}  // namespace lmf::kernels
