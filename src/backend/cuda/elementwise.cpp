// Host glue for the elementwise ops, reductions and the in-place axpy (kernels/elementwise.cu,
// kernels/reduce.cu): select the tensor's GPU and launch.
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.h"

namespace lmf::cuda {

namespace k = lmf::kernels;

void scale_forward(Device device, float* out, const float* a, float factor, int64_t n) {
  DeviceGuard guard(device);
  k::scale_forward(out, a, factor, n, stream());
}
void binary_forward_typed(Device device, k::BinaryOp op, void* out, DType out_dtype, const void* a, DType a_dtype,
                          const void* b, DType b_dtype, int64_t n, int64_t nb) {
  DeviceGuard guard(device);
  k::binary_forward_typed(op, out, elem_type(out_dtype), a, elem_type(a_dtype), b, elem_type(b_dtype), n, nb,
                          stream());
}
void mul_backward_typed(Device device, float* da, float* db, const float* dout, const void* a, DType a_dtype,
                        const void* b, DType b_dtype, int64_t n, int64_t nb) {
  DeviceGuard guard(device);
  k::mul_backward_typed(da, db, dout, a, elem_type(a_dtype), b, elem_type(b_dtype), n, nb, stream());
}
void column_sums(Device device, const float* in, float* out, int64_t rows, int64_t cols, float factor,
                 bool accumulate) {
  DeviceGuard guard(device);
  if (!accumulate) {
    k::column_sums(out, in, nullptr, rows, cols, factor, stream());
    return;
  }
  // A (cols) temporary and an axpy: a bias-sized vector, not worth a second kernel variant.
  Tensor sums = workspace(device, sizeof(float) * cols);
  k::column_sums(sums.data<float>(), in, nullptr, rows, cols, factor, stream());
  k::add_inplace(out, sums.data<float>(), 1.f, cols, stream());
}
void add_inplace(Device device, float* dst, const float* src, float alpha, int64_t n) {
  DeviceGuard guard(device);
  k::add_inplace(dst, src, alpha, n, stream());
}
void sum_all(Device device, float* out, const float* x, int64_t n, float factor, bool square) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, sizeof(float) * k::kReducePartials);
  k::sum_all(out, x, n, factor, square, scratch.data<float>(), stream());
}
void sum_dim_forward(Device device, float* out, const float* x, int64_t outer, int64_t d, int64_t inner,
                     float factor) {
  DeviceGuard guard(device);
  k::sum_dim_forward(out, x, outer, d, inner, factor, stream());
}
void sum_dim_backward(Device device, float* dx, const float* dout, int64_t outer, int64_t d, int64_t inner,
                      float factor) {
  DeviceGuard guard(device);
  k::sum_dim_backward(dx, dout, outer, d, inner, factor, stream());
}
void broadcast_scalar(Device device, float* out, const float* scalar, float factor, int64_t n) {
  DeviceGuard guard(device);
  k::broadcast_scalar(out, scalar, factor, n, stream());
}

}  // namespace lmf::cuda
