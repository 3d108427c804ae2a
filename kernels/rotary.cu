// Rotary position embedding, Hugging Face's rotate_half pairing: dims d and d + HS/2 of a head rotate
// together by the angle of (position offset + t, d):
//   out[d] = x[d] c - x[d + HS/2] s,  out[d + HS/2] = x[d + HS/2] c + x[d] s
// x (B, NH, T, HS) at element strides (stride_b, stride_h, stride_t, 1); out contiguous (B, NH, T, HS);
// cos, sin (L, HS/2) f32. sin_sign -1 is the inverse rotation, i.e. the backward (dx written).
// x and out are f32 or bf16 storage (templates, f32 math): a bf16 projection is read through its
// strides in place and the output rounded once, with no widened copy of x.
// One thread per pair: both halves are read and written by the same thread, so out may not alias x.
#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

template <class TIn, class TOut>
__global__ void rotary_kernel(TOut* out, const TIn* x, const float* cos, const float* sin, int64_t nh, int64_t t,
                              int64_t half, int64_t stride_b, int64_t stride_h, int64_t stride_t, int64_t offset,
                              float sin_sign, int64_t pairs) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % half, row = i / half;  // row = (b * NH + h) * T + t
    const int64_t ti = row % t, h = (row / t) % nh, bi = row / (t * nh);
    const TIn* xr = x + bi * stride_b + h * stride_h + ti * stride_t;
    const float c = cos[(offset + ti) * half + d], s = sin_sign * sin[(offset + ti) * half + d];
    const float x1 = to_float(xr[d]), x2 = to_float(xr[d + half]);
    TOut* orow = out + row * 2 * half;
    orow[d] = from_float<TOut>(x1 * c - x2 * s);
    orow[d + half] = from_float<TOut>(x2 * c + x1 * s);
  }
}

}  // namespace

void rotary_apply_typed(void* out, ElemType out_type, const void* x, ElemType x_type, const float* cos,
                        const float* sin, int64_t b, int64_t nh, int64_t t, int64_t hs, int64_t stride_b,
                        int64_t stride_h, int64_t stride_t, int64_t offset, float sin_sign, cudaStream_t stream) {
  const bool x16 = storage_is_bf16(x_type, "rotary_apply", "x");
  const bool out16 = storage_is_bf16(out_type, "rotary_apply", "out");
  const int64_t pairs = b * nh * t * (hs / 2);
  if (pairs == 0) return;
  with_storage(x16, out16, [&](auto tin, auto tout) {
    using TIn = decltype(tin);
    using TOut = decltype(tout);
    rotary_kernel<TIn, TOut><<<grid_for(pairs, kThreads), kThreads, 0, stream>>>(
        static_cast<TOut*>(out), static_cast<const TIn*>(x), cos, sin, nh, t, hs / 2, stride_b, stride_h, stride_t,
        offset, sin_sign, pairs);
  });
  LMF_CUDA_LAUNCH_CHECK();
}

void rotary_apply(float* out, const float* x, const float* cos, const float* sin, int64_t b, int64_t nh, int64_t t,
                  int64_t hs, int64_t stride_b, int64_t stride_h, int64_t stride_t, int64_t offset, float sin_sign,
                  cudaStream_t stream) {
  rotary_apply_typed(out, ElemType::f32, x, ElemType::f32, cos, sin, b, nh, t, hs, stride_b, stride_h, stride_t,
                     offset, sin_sign, stream);
}

}  // namespace lmf::kernels
