// Host glue for the model ops (kernels/embedding.cu, layernorm.cu, rmsnorm.cu, rotary.cu, swiglu.cu,
// gelu.cu, softmax.cu, attention.cu, cross_entropy.cu, dropout.cu, adamw.cu): select the GPU, take workspace from its
// caching allocator, launch. Id checks are the one place that reads a value back to the host
// (skipped inside a CUDA graph capture).
#include <cuda_runtime.h>

#include "backend/cuda/adamw_device_scalars.h"
#include "backend/cuda/cuda_backend.h"
#include "adamw_step_scalars.h"
#include "backend/cuda/cuda_common.h"

namespace lmf::cuda {
namespace {

namespace k = lmf::kernels;

// Reads the first bad position found on the device and throws naming it and its id.
template <class Id>
void report_first_bad(const char* op, const Tensor& first_bad, const Id* ids, int64_t n, int64_t v) {
  long long bad = n;
  LMF_CUDA_CHECK(cudaMemcpy(&bad, first_bad.raw_data(), sizeof(bad), cudaMemcpyDeviceToHost));
  if (bad >= n) return;
  Id id{};
  LMF_CUDA_CHECK(cudaMemcpy(&id, ids + bad, sizeof(Id), cudaMemcpyDeviceToHost));
  throw Error(str(op, " ", static_cast<int64_t>(id), " at position ", bad,
                  " is outside the vocabulary of size ", v));
}

}  // namespace

// Inside a CUDA graph capture the check is skipped: it reads its verdict back to the host, which
// a capture cannot do, and a replay would not run it on the new ids anyway. The captured step's
// ids come from static buffers that the caller fills from checked data (the loader checks ids).
void check_ids_i32(Device device, const char* op, const int32_t* ids, int64_t n, int64_t v, int32_t allowed) {
  if (detail::cuda_capturing(device)) return;
  DeviceGuard guard(device);
  Tensor first_bad = workspace(device, sizeof(long long));
  k::find_invalid_ids_i32(static_cast<long long*>(first_bad.raw_data()), ids, n, v, allowed, stream());
  report_first_bad(op, first_bad, ids, n, v);
}

void check_ids_u16(Device device, const char* op, const uint16_t* ids, int64_t n, int64_t v) {
  if (detail::cuda_capturing(device)) return;
  DeviceGuard guard(device);
  Tensor first_bad = workspace(device, sizeof(long long));
  k::find_invalid_ids_u16(static_cast<long long*>(first_bad.raw_data()), ids, n, v, stream());
  report_first_bad(op, first_bad, ids, n, v);
}

void embedding_forward_i32(Device device, float* out, const float* weight, const int32_t* ids, int64_t n,
                           int64_t c) {
  DeviceGuard guard(device);
  k::embedding_forward_i32(out, weight, ids, n, c, stream());
}

void embedding_forward_u16(Device device, float* out, const float* weight, const uint16_t* ids, int64_t n,
                           int64_t c) {
  DeviceGuard guard(device);
  k::embedding_forward_u16(out, weight, ids, n, c, stream());
}

void embedding_backward_i32(Device device, float* dweight, const float* dout, const int32_t* ids, int64_t n,
                            int64_t c, int64_t v, bool accumulate) {
  DeviceGuard guard(device);
  const std::size_t bytes = k::embedding_backward_workspace(n);
  Tensor scratch = workspace(device, static_cast<int64_t>(bytes));
  k::embedding_backward(dweight, dout, ids, n, c, v, accumulate, scratch.raw_data(), bytes, stream());
}

void embedding_backward_u16(Device device, float* dweight, const float* dout, const uint16_t* ids, int64_t n,
                            int64_t c, int64_t v, bool accumulate) {
  DeviceGuard guard(device);
  // Widen to i32 so the sort has one key type (one CUB instantiation).
  Tensor wide = Tensor::empty({n > 0 ? n : 1}, DType::i32, device);
  k::StridedLayout layout;
  layout.nd = 1;
  layout.shape[0] = n;
  layout.strides[0] = 1;
  k::strided_copy(wide.raw_data(), k::ElemType::i32, ids, k::ElemType::u16, layout, stream());
  const std::size_t bytes = k::embedding_backward_workspace(n);
  Tensor scratch = workspace(device, static_cast<int64_t>(bytes));
  k::embedding_backward(dweight, dout, wide.data<int32_t>(), n, c, v, accumulate, scratch.raw_data(), bytes, stream());
}

void layer_norm_forward(Device device, float* out, float* mean, float* rstd, const float* x, const float* weight,
                        const float* bias, int64_t n, int64_t c, float eps) {
  DeviceGuard guard(device);
  k::layernorm_forward(out, mean, rstd, x, weight, bias, n, c, eps, stream());
}

void layer_norm_backward(Device device, float* dx, float* dweight, float* dbias, const float* dout,
                         const float* x, const float* weight, const float* mean, const float* rstd, int64_t n,
                         int64_t c) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, sizeof(float) * k::layernorm_backward_workspace(n, c));
  k::layernorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd, n, c, scratch.data<float>(), stream());
}

void rms_norm_forward(Device device, float* out, float* rstd, const float* x, const float* weight, int64_t n,
                      int64_t c, float eps) {
  DeviceGuard guard(device);
  k::rmsnorm_forward(out, rstd, x, weight, n, c, eps, stream());
}

void rms_norm_backward(Device device, float* dx, float* dweight, const float* dout, const float* x,
                       const float* weight, const float* rstd, int64_t n, int64_t c) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, sizeof(float) * k::rmsnorm_backward_workspace(n, c));
  k::rmsnorm_backward(dx, dweight, dout, x, weight, rstd, n, c, scratch.data<float>(), stream());
}

void rotary_apply(Device device, float* out, const float* x, const float* cos, const float* sin, int64_t b,
                  int64_t nh, int64_t t, int64_t hs, int64_t stride_b, int64_t stride_h, int64_t stride_t,
                  int64_t offset, float sin_sign) {
  DeviceGuard guard(device);
  k::rotary_apply(out, x, cos, sin, b, nh, t, hs, stride_b, stride_h, stride_t, offset, sin_sign, stream());
}

void swiglu_forward(Device device, float* out, const float* gate, const float* up, int64_t n) {
  DeviceGuard guard(device);
  k::swiglu_forward(out, gate, up, n, stream());
}

void swiglu_backward(Device device, float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     int64_t n) {
  DeviceGuard guard(device);
  k::swiglu_backward(dgate, dup, dout, gate, up, n, stream());
}

void gelu_forward(Device device, float* out, const float* x, int64_t n) {
  DeviceGuard guard(device);
  k::gelu_forward(out, x, n, stream());
}

void gelu_backward(Device device, float* dx, const float* dout, const float* x, int64_t n) {
  DeviceGuard guard(device);
  k::gelu_backward(dx, dout, x, n, stream());
}

void softmax_forward(Device device, float* y, const float* x, int64_t n, int64_t c) {
  DeviceGuard guard(device);
  k::softmax_forward(y, x, n, c, stream());
}

void softmax_backward(Device device, float* dx, const float* dy, const float* y, int64_t n, int64_t c) {
  DeviceGuard guard(device);
  k::softmax_backward(dx, dy, y, n, c, stream());
}

void attention_forward(Device device, float* out, float* lse, const float* q, const float* k_, const float* v,
                       int64_t b, int64_t nh, int64_t nkv, int64_t tq, int64_t tk, int64_t hs) {
  DeviceGuard guard(device);
  k::attention_forward(out, lse, q, k_, v, b, nh, nkv, tq, tk, hs, stream());
}

void attention_backward(Device device, float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* q, const float* k_, const float* v, const float* lse, int64_t bh, int64_t t,
                        int64_t hs) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, sizeof(float) * k::attention_backward_workspace(bh, t));
  k::attention_backward(dq, dk, dv, dout, out, q, k_, v, lse, bh, t, hs, scratch.data<float>(), stream());
}

void cross_entropy_forward(Device device, float* loss, float* count, float* lse, const float* logits,
                           const int32_t* targets, int64_t n, int64_t v, int32_t ignore_index) {
  DeviceGuard guard(device);
  Tensor losses = workspace(device, sizeof(float) * n);  // (N)
  k::cross_entropy_forward(loss, count, losses.data<float>(), lse, logits, targets, n, v, ignore_index, stream());
}

void cross_entropy_backward(Device device, float* dlogits, const float* logits, const float* lse,
                            const int32_t* targets, const float* dloss, const float* count, int64_t n, int64_t v,
                            int32_t ignore_index) {
  DeviceGuard guard(device);
  k::cross_entropy_backward(dlogits, logits, lse, targets, dloss, count, n, v, ignore_index, stream());
}

void dropout_apply(Device device, float* out, const float* x, int64_t n, float p, uint64_t seed, uint64_t base) {
  DeviceGuard guard(device);
  k::dropout_apply(out, x, n, p, seed, base, stream());
}

void adamw_update(Device device, float* p, const float* g, float* m, float* v, int64_t n, float decay_factor,
                  float lr, float beta1, float beta2, float eps, float bias_correction1,
                  float bias_correction2_sqrt) {
  DeviceGuard guard(device);
  k::adamw_update(p, g, m, v, n, decay_factor, lr, beta1, beta2, eps, bias_correction1, bias_correction2_sqrt,
                  stream());
}

void adamw_update_device_scalars(Device device, float* p, const float* g, float* m, float* v, int64_t n,
                                 float weight_decay, float beta1, float beta2, float eps, const float* scalars) {
  DeviceGuard guard(device);
  k::adamw_update_device_scalars(p, g, m, v, n, weight_decay, beta1, beta2, eps,
                                 reinterpret_cast<const k::AdamWStepScalars*>(scalars), stream());
}

void write_adamw_scalars(Device device, float* scalars, const float* values) {
  detail::check_not_capturing(device, "writing AdamW's step scalars from the host");
  DeviceGuard guard(device);
  // From pageable memory the driver stages the values before it returns (it may wait for the
  // stream to do so), so `values` may go out of scope at once.
  LMF_CUDA_CHECK(cudaMemcpyAsync(scalars, values, sizeof(k::AdamWStepScalars), cudaMemcpyHostToDevice, stream()));
}

}  // namespace lmf::cuda
