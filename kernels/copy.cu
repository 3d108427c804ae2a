// Strided copies with dtype conversion, and fills: what Tensor::contiguous_copy, to(DType) and
// fill_ need on the device. One thread per destination element; the source offset is rebuilt from
// the logical index, which is simple and right for any permutation of up to 8 dims.
// Shapes: dst (numel) contiguous; src any strided layout of the same numel.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

__device__ __forceinline__ float load_as_float(const void* base, int64_t i, ElemType t) {
  switch (t) {
    case ElemType::f32: return static_cast<const float*>(base)[i];
    case ElemType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    case ElemType::i32: return static_cast<float>(static_cast<const int32_t*>(base)[i]);
    case ElemType::u16: return static_cast<float>(static_cast<const uint16_t*>(base)[i]);
  }
  return 0.f;
}

__device__ __forceinline__ void store_from_float(void* base, int64_t i, ElemType t, float v) {
  switch (t) {
    case ElemType::f32: static_cast<float*>(base)[i] = v; break;
    case ElemType::bf16: static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v); break;
    case ElemType::i32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
    case ElemType::u16: static_cast<uint16_t*>(base)[i] = static_cast<uint16_t>(v); break;
  }
}

__device__ __forceinline__ int elem_size(ElemType t) {
  return (t == ElemType::f32 || t == ElemType::i32) ? 4 : 2;
}

__global__ void strided_copy_kernel(void* dst, ElemType dst_type, const void* src, ElemType src_type,
                                    StridedLayout layout, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, offset = 0;
    for (int d = layout.nd - 1; d >= 0; --d) {
      const int64_t size = layout.shape[d];
      offset += (rem % size) * layout.strides[d];
      rem /= size;
    }
    if (dst_type == src_type) {
      if (elem_size(src_type) == 4) {
        static_cast<uint32_t*>(dst)[i] = static_cast<const uint32_t*>(src)[offset];
      } else {
        static_cast<uint16_t*>(dst)[i] = static_cast<const uint16_t*>(src)[offset];
      }
    } else {
      store_from_float(dst, i, dst_type, load_as_float(src, offset, src_type));
    }
  }
}

__global__ void fill_kernel(void* dst, ElemType type, float value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store_from_float(dst, i, type, value);
}

}  // namespace

void strided_copy(void* dst, ElemType dst_type, const void* src, ElemType src_type,
                  const StridedLayout& src_layout, cudaStream_t stream) {
  if (src_layout.nd > kMaxDims) throw CudaError("strided_copy: more than 8 dims");
  int64_t n = 1;
  for (int d = 0; d < src_layout.nd; ++d) n *= src_layout.shape[d];
  if (n == 0) return;
  constexpr int kThreads = 256;
  strided_copy_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dst, dst_type, src, src_type,
                                                                       src_layout, n);
  LMF_CUDA_LAUNCH_CHECK();
}

void fill(void* dst, ElemType type, float value, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  fill_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dst, type, value, n);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
