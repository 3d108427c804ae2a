// In-place updates that are never recorded: gradient accumulation in the autograd engine and
// optimizer arithmetic. Vectorised by the compiler, parallel over large tensors.
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"

namespace lmf {

Tensor& add_(Tensor& dst, const Tensor& src, float alpha) {
  LMF_CHECK(dst.shape() == src.shape(), "add_: shape ", shape_str(src.shape()), " into ",
            shape_str(dst.shape()));
  LMF_CHECK(dst.dtype() == DType::f32 && dst.is_contiguous(), "add_: destination must be a contiguous f32 tensor");
  switch (dst.device().type) {
    case DeviceType::cpu: {
      const Tensor s = src.dtype() == DType::f32 ? src.contiguous_copy() : src.to(DType::f32).contiguous_copy();
      float* d = dst.data<float>();
      const float* p = s.data<float>();
      const int64_t n = dst.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) d[i] += alpha * p[i];
      return dst;
    }
    case DeviceType::cuda: {
      LMF_CHECK(src.device() == dst.device(), "add_: source on ", src.device().str(), ", destination on ",
                dst.device().str());
      const Tensor s = src.dtype() == DType::f32 ? src.contiguous_copy() : src.to(DType::f32).contiguous_copy();
      cuda::add_inplace(dst.device(), dst.data<float>(), s.data<float>(), alpha, dst.numel());
      return dst;
    }
  }
  return dst;
}

Tensor& scale_(Tensor& dst, float factor) {
  LMF_CHECK(dst.dtype() == DType::f32 && dst.is_contiguous(), "scale_: needs a contiguous f32 tensor");
  switch (dst.device().type) {
    case DeviceType::cpu: {
      float* d = dst.data<float>();
      const int64_t n = dst.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) d[i] *= factor;
      return dst;
    }
    case DeviceType::cuda:
      cuda::scale_forward(dst.device(), dst.data<float>(), dst.data<float>(), factor, dst.numel());
      return dst;
  }
  return dst;
}

}  // namespace lmf
