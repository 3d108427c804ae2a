// Host glue for the model ops (kernels/embedding.cu, layernorm.cu, rmsnorm.cu, rotary.cu, swiglu.cu,
// gelu.cu, softmax.cu, attention.cu, cross_entropy.cu, dropout.cu, adamw.cu): select the GPU, take workspace from its
// caching allocator, launch. Id checks are the one place that reads a value back to the host, and
// are skipped when ComputeOptions::device_id_checks is off (the trainer, whose loader checked them).
#include <cuda_runtime.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.h"
#include "step_kernels.h"

namespace lmf::cuda {
namespace {

namespace k = lmf::kernels;

// Reads the first bad position found on the device and throws naming it and its id.
template <class Id>
void report_first_bad(const char* op, const Tensor& first_bad, const Id* ids, int64_t n, int64_t v) {
  long long bad = n;
  detail::count_cuda_host_sync();
  LMF_CUDA_CHECK(cudaMemcpy(&bad, first_bad.raw_data(), sizeof(bad), cudaMemcpyDeviceToHost));
  if (bad >= n) return;
  Id id{};
  LMF_CUDA_CHECK(cudaMemcpy(&id, ids + bad, sizeof(Id), cudaMemcpyDeviceToHost));
  throw Error(str(op, " ", static_cast<int64_t>(id), " at position ", bad,
                  " is outside the vocabulary of size ", v));
}

}  // namespace

void check_ids_i32(Device device, const char* op, const int32_t* ids, int64_t n, int64_t v, int32_t allowed) {
  if (!compute_options().device_id_checks) return;
  DeviceGuard guard(device);
  Tensor first_bad = workspace(device, sizeof(long long));
  k::find_invalid_ids_i32(static_cast<long long*>(first_bad.raw_data()), ids, n, v, allowed, kStream);
  report_first_bad(op, first_bad, ids, n, v);
}

void check_ids_u16(Device device, const char* op, const uint16_t* ids, int64_t n, int64_t v) {
  if (!compute_options().device_id_checks) return;
  DeviceGuard guard(device);
  Tensor first_bad = workspace(device, sizeof(long long));
  k::find_invalid_ids_u16(static_cast<long long*>(first_bad.raw_data()), ids, n, v, kStream);
  report_first_bad(op, first_bad, ids, n, v);
}

void embedding_forward_i32(Device device, float* out, const float* weight, const int32_t* ids, int64_t n,
                           int64_t c) {
  DeviceGuard guard(device);
  k::embedding_forward_i32(out, weight, ids, n, c, kStream);
}

void embedding_forward_u16(Device device, float* out, const float* weight, const uint16_t* ids, int64_t n,
                           int64_t c) {
  DeviceGuard guard(device);
  k::embedding_forward_u16(out, weight, ids, n, c, kStream);
}

void embedding_backward_i32(Device device, float* dweight, const float* dout, const int32_t* ids, int64_t n,
                            int64_t c, int64_t v, bool accumulate) {
  DeviceGuard guard(device);
  const std::size_t bytes = k::embedding_backward_workspace(n);
  Tensor scratch = workspace(device, static_cast<int64_t>(bytes));
  k::embedding_backward(dweight, dout, ids, n, c, v, accumulate, scratch.raw_data(), bytes, kStream);
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
  k::strided_copy(wide.raw_data(), k::ElemType::i32, ids, k::ElemType::u16, layout, kStream);
  const std::size_t bytes = k::embedding_backward_workspace(n);
  Tensor scratch = workspace(device, static_cast<int64_t>(bytes));
  k::embedding_backward(dweight, dout, wide.data<int32_t>(), n, c, v, accumulate, scratch.raw_data(), bytes, kStream);
}

void layer_norm_forward(Device device, float* out, float* mean, float* rstd, const float* x, const float* weight,
                        const float* bias, int64_t n, int64_t c, float eps) {
  DeviceGuard guard(device);
  k::layernorm_forward(out, mean, rstd, x, weight, bias, n, c, eps, kStream);
}

void layer_norm_backward(Device device, float* dx, float* dweight, float* dbias, const float* dout,
                         const float* x, const float* weight, const float* mean, const float* rstd, int64_t n,
                         int64_t c) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, sizeof(float) * k::layernorm_backward_workspace(n, c));
  k::layernorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd, n, c, scratch.data<float>(), kStream);
}

void rms_norm_forward(Device device, float* out, float* rstd, const float* x, const float* weight, int64_t n,
                      int64_t c, float eps) {
  DeviceGuard guard(device);
  k::rmsnorm_forward(out, rstd, x, weight, n, c, eps, kStream);
}

void rms_norm_backward(Device device, float* dx, float* dweight, const float* dout, const float* x,
                       const float* weight, const float* rstd, int64_t n, int64_t c) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, sizeof(float) * k::rmsnorm_backward_workspace(n, c));
  k::rmsnorm_backward(dx, dweight, dout, x, weight, rstd, n, c, scratch.data<float>(), kStream);
}

void rotary_apply(Device device, float* out, const float* x, const float* cos, const float* sin, int64_t b,
                  int64_t nh, int64_t t, int64_t hs, int64_t stride_b, int64_t stride_h, int64_t stride_t,
                  int64_t offset, float sin_sign) {
  DeviceGuard guard(device);
  k::rotary_apply(out, x, cos, sin, b, nh, t, hs, stride_b, stride_h, stride_t, offset, sin_sign, kStream);
}

void swiglu_forward(Device device, float* out, const float* gate, const float* up, int64_t n) {
  DeviceGuard guard(device);
  k::swiglu_forward(out, gate, up, n, kStream);
}

void swiglu_backward(Device device, float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     int64_t n) {
  DeviceGuard guard(device);
  k::swiglu_backward(dgate, dup, dout, gate, up, n, kStream);
}

void gelu_forward(Device device, float* out, const float* x, int64_t n) {
  DeviceGuard guard(device);
  k::gelu_forward(out, x, n, kStream);
}

void gelu_backward(Device device, float* dx, const float* dout, const float* x, int64_t n) {
  DeviceGuard guard(device);
  k::gelu_backward(dx, dout, x, n, kStream);
}

void softmax_forward(Device device, float* y, const float* x, int64_t n, int64_t c) {
  DeviceGuard guard(device);
  k::softmax_forward(y, x, n, c, kStream);
}

void softmax_backward(Device device, float* dx, const float* dy, const float* y, int64_t n, int64_t c) {
  DeviceGuard guard(device);
  k::softmax_backward(dx, dy, y, n, c, kStream);
}

void attention_forward(Device device, float* out, float* lse, const float* q, const float* k_, const float* v,
                       int64_t b, int64_t nh, int64_t nkv, int64_t tq, int64_t tk, int64_t hs) {
  DeviceGuard guard(device);
  k::attention_forward(out, lse, q, k_, v, b, nh, nkv, tq, tk, hs, kStream);
}

void attention_backward(Device device, float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* q, const float* k_, const float* v, const float* lse, int64_t bh, int64_t t,
                        int64_t hs) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, sizeof(float) * k::attention_backward_workspace(bh, t));
  k::attention_backward(dq, dk, dv, dout, out, q, k_, v, lse, bh, t, hs, scratch.data<float>(), kStream);
}

void cross_entropy_forward(Device device, float* loss, float* count, float* lse, const float* logits,
                           const int32_t* targets, int64_t n, int64_t v, int32_t ignore_index) {
  DeviceGuard guard(device);
  Tensor losses = workspace(device, sizeof(float) * n);  // (N)
  k::cross_entropy_forward(loss, count, losses.data<float>(), lse, logits, targets, n, v, ignore_index, kStream);
}

void cross_entropy_backward(Device device, float* dlogits, const float* logits, const float* lse,
                            const int32_t* targets, const float* dloss, const float* count, int64_t n, int64_t v,
                            int32_t ignore_index) {
  DeviceGuard guard(device);
  k::cross_entropy_backward(dlogits, logits, lse, targets, dloss, count, n, v, ignore_index, kStream);
}

void dropout_apply(Device device, float* out, const float* x, int64_t n, float p, uint64_t seed, uint64_t base) {
  DeviceGuard guard(device);
  k::dropout_apply(out, x, n, p, seed, base, kStream);
}

void adamw_update(Device device, float* p, const float* g, float* m, float* v, int64_t n, float decay_factor,
                  float lr, float beta1, float beta2, float eps, float bias_correction1,
                  float bias_correction2_sqrt) {
  DeviceGuard guard(device);
  k::adamw_update(p, g, m, v, n, decay_factor, lr, beta1, beta2, eps, bias_correction1, bias_correction2_sqrt,
                  kStream);
}

void adamw_update_controlled(Device device, float* p, const float* g, float* m, float* v, int64_t n,
                             float decay_factor, float lr, float beta1, float beta2, float eps,
                             const kernels::StepControl* control) {
  DeviceGuard guard(device);
  k::adamw_update_controlled(p, g, m, v, n, decay_factor, lr, beta1, beta2, eps, control, kStream);
}

void step_decide(Device device, kernels::StepControl* control, kernels::StepRecord* record, float max_norm,
                 float beta1, float beta2) {
  DeviceGuard guard(device);
  k::step_decide(control, record, max_norm, beta1, beta2, kStream);
}

}  // namespace lmf::cuda
