// Global-norm clipping. On the CPU the norm is one OpenMP reduction in double over the gradient
// slab (its zero padding adds nothing); other devices go through the ops so no extra kernel is needed.
#include "lmforge/optim/clip.h"

#include <algorithm>
#include <cmath>

#include "backend/cuda/cuda_backend.h"
#include "lmforge/autograd.h"
#include "lmforge/ops.h"

namespace lmf::optim {
namespace {

double sum_squares(const Tensor& g) {
  if (g.device().is_cpu() && g.is_contiguous() && g.dtype() == DType::f32) {
    return sum_of_squares(g.data<float>(), g.numel());
  }
  if (g.device().is_cuda() && g.is_contiguous() && g.dtype() == DType::f32) {
    // One two-pass reduction of squares on the device (kernels/reduce.cu), no slab-sized temporary.
    Tensor total = Tensor::empty({}, DType::f32, g.device());
    cuda::sum_all(g.device(), total.data<float>(), g.data<float>(), g.numel(), 1.f, true);
    return double(total.item());
  }
  NoGradGuard no_grad;
  return double(sum(mul(g, g)).item());
}

void scale_all(const std::vector<Tensor>& grads, double total, double max_norm) {
  const float coef = clip_factor(total, max_norm);
  if (coef == 1.f) return;  // also leaves NaN/Inf norms for the caller to see
  NoGradGuard no_grad;
  for (Tensor g : grads) scale_(g, coef);
}

std::vector<Tensor> grads_of(const std::vector<Tensor>& params) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined()) grads.push_back(g);
  }
  return grads;
}

}  // namespace

// torch: clip_coef = max_norm / (total + 1e-6), applied when below 1.
float clip_factor(double norm, double max_norm) {
  const double coef = max_norm / (norm + 1e-6);
  return max_norm > 0 && coef < 1.0 ? static_cast<float>(coef) : 1.f;
}

double sum_of_squares(const float* data, int64_t n) {
  // An OpenMP reduction combines thread partials in whatever order threads finish, which changes
  // the last bits between runs; fixed chunks summed in order do not.
  constexpr int64_t kChunks = 64;
  double partial[kChunks] = {};
  const int64_t chunk = (n + kChunks - 1) / kChunks;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t c = 0; c < kChunks; ++c) {
    const int64_t begin = c * chunk, end = std::min(n, begin + chunk);
    double total = 0.0;
#pragma omp simd reduction(+ : total)
    for (int64_t i = begin; i < end; ++i) total += double(data[i]) * double(data[i]);
    partial[c] = total;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

double sum_of_squares(const Tensor& t) { return t.numel() == 0 ? 0.0 : sum_squares(t); }

double grad_norm(const nn::ParameterSlab& slab) { return std::sqrt(sum_squares(slab.grads())); }

double grad_norm(const std::vector<Tensor>& params) {
  double total = 0.0;
  for (const Tensor& g : grads_of(params)) total += sum_squares(g);
  return std::sqrt(total);
}

double clip_grad_norm(const nn::ParameterSlab& slab, double max_norm) {
  LMF_CHECK(max_norm > 0.0, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  const double total = grad_norm(slab);
  scale_all({slab.grads()}, total, max_norm);
  return total;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  LMF_CHECK(max_norm > 0.0, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  const std::vector<Tensor> grads = grads_of(params);
  double total = 0.0;
  for (const Tensor& g : grads) total += sum_squares(g);
  total = std::sqrt(total);
  scale_all(grads, total, max_norm);
  return total;
}

}  // namespace lmf::optim
