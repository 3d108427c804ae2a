// Host glue for the primitive ops (kernels/primitives.cu): select the tensor's GPU and launch. The
// arguments are those of the lmf::cpu:: functions of the same names, with the device first.
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.h"

namespace lmf::cuda {

namespace k = lmf::kernels;

void broadcast_binary_typed(Device device, k::BinaryOp op, void* out, DType out_dtype, const void* a, DType a_dtype,
                            const void* b, DType b_dtype, const k::BroadcastLayout& layout) {
  DeviceGuard guard(device);
  k::broadcast_binary_typed(op, out, elem_type(out_dtype), a, elem_type(a_dtype), b, elem_type(b_dtype), layout,
                            stream());
}
void broadcast_binary_backward_typed(Device device, k::BinaryOp op, float* ga, float* gb, const float* g,
                                     const void* a, DType a_dtype, const void* b, DType b_dtype,
                                     const k::BroadcastLayout& layout) {
  DeviceGuard guard(device);
  k::broadcast_binary_backward_typed(op, ga, gb, g, a, elem_type(a_dtype), b, elem_type(b_dtype), layout, stream());
}
void sum_to(Device device, float* out, const float* in, const k::ReduceLayout& layout) {
  DeviceGuard guard(device);
  k::sum_to(out, in, layout, stream());
}
void unary_forward_typed(Device device, k::UnaryOp op, void* out, const void* x, DType dtype, float p, int64_t n) {
  DeviceGuard guard(device);
  k::unary_forward_typed(op, out, x, elem_type(dtype), p, n, stream());
}
void unary_backward_typed(Device device, k::UnaryOp op, float* dx, const float* dout, const void* x, const void* y,
                          DType dtype, float p, int64_t n) {
  DeviceGuard guard(device);
  k::unary_backward_typed(op, dx, dout, x, y, elem_type(dtype), p, n, stream());
}
void unary_forward(Device device, k::UnaryOp op, float* out, const float* x, float p, int64_t n) {
  DeviceGuard guard(device);
  k::unary_forward(op, out, x, p, n, stream());
}
void unary_backward(Device device, k::UnaryOp op, float* dx, const float* dout, const float* x, const float* y,
                    float p, int64_t n) {
  DeviceGuard guard(device);
  k::unary_backward(op, dx, dout, x, y, p, n, stream());
}
void max_dim_forward(Device device, float* out, int32_t* argmax, const float* x, int64_t outer, int64_t d,
                     int64_t inner) {
  DeviceGuard guard(device);
  k::max_dim_forward(out, argmax, x, outer, d, inner, stream());
}
void max_dim_backward(Device device, float* dx, const float* dout, const int32_t* argmax, int64_t outer, int64_t d,
                      int64_t inner) {
  DeviceGuard guard(device);
  k::max_dim_backward(dx, dout, argmax, outer, d, inner, stream());
}
void copy_rows(Device device, float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows,
               int64_t width) {
  DeviceGuard guard(device);
  k::copy_rows(dst, dst_stride, src, src_stride, rows, width, stream());
}
void where_forward(Device device, float* out, const float* cond, const float* a, const float* b,
                   const k::BroadcastLayout& layout) {
  DeviceGuard guard(device);
  k::where_forward(out, cond, a, b, layout, stream());
}
void where_backward(Device device, float* ga, float* gb, const float* g, const float* cond,
                    const k::BroadcastLayout& layout) {
  DeviceGuard guard(device);
  k::where_backward(ga, gb, g, cond, layout, stream());
}
void gather_forward(Device device, float* out, const float* x, const int32_t* index, int64_t rows, int64_t n,
                    int64_t k_cols) {
  DeviceGuard guard(device);
  k::gather_forward(out, x, index, rows, n, k_cols, stream());
}
void gather_backward(Device device, float* dx, const float* dout, const int32_t* index, int64_t rows, int64_t n,
                     int64_t k_cols) {
  DeviceGuard guard(device);
  k::gather_backward(dx, dout, index, rows, n, k_cols, stream());
}

}  // namespace lmf::cuda
