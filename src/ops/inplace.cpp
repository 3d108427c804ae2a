// In-place updates that are never recorded: gradient accumulation in the autograd engine and
// optimizer arithmetic. Vectorised by the compiler, parallel over large tensors.
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
    case DeviceType::cuda:
      throw Error("add_: CUDA backend not available in this build");
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
      throw Error("scale_: CUDA backend not available in this build");
  }
  return dst;
}

}  // namespace lmf
