// Host glue for the model ops (kernels/embedding.cu, layernorm.cu, rmsnorm.cu, rotary.cu, swiglu.cu,
// gelu.cu, softmax.cu, attention.cu, flash_attention.cu, cross_entropy.cu, dropout.cu, adamw.cu): select the GPU,
// take workspace from its caching allocator, launch. Id checks are the one place that reads a value back to the host,
// and are skipped when ComputeOptions::device_id_checks is off (the trainer, whose loader checked them)
// or inside a CUDA graph capture.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "backend/cuda/adamw_device_scalars.h"
#include "backend/cuda/cuda_backend.h"
#include "adamw_step_scalars.h"
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

// LMF_ATTENTION, read once: the GPU check can compare the flash and f32 kernels on one build
// without a config change. An unknown value is an error, not a silent default.
std::optional<AttentionBackend> env_attention() {
  static const std::optional<AttentionBackend> choice = []() -> std::optional<AttentionBackend> {
    const char* v = std::getenv("LMF_ATTENTION");
    if (v == nullptr || *v == '\0') return std::nullopt;
    const std::string s(v);
    if (s == "flash") return AttentionBackend::flash;
    if (s == "f32") return AttentionBackend::f32;
    throw Error("LMF_ATTENTION: '" + s + "' is not one of flash, f32");
  }();
  return choice;
}

// Compute capability major of a device, asked once per device (attention asks on every call).
int capability_major(Device device) {
  static std::mutex mutex;
  static std::map<int, int> known;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto it = known.find(device.index);
  if (it != known.end()) return it->second;
  int major = 0;
  LMF_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device.index));
  known[device.index] = major;
  return major;
}

k::FlashAttentionParams flash_params(const char* op, const FlashOperands& ops) {
  LMF_CHECK(ops.hs == 64 || ops.hs == 128, op, ": head size ", ops.hs, " is not 64 or 128");
  LMF_CHECK(ops.b >= 1 && ops.t >= 1 && ops.nkv >= 1 && ops.nh % ops.nkv == 0, op, ": B ", ops.b, ", T ", ops.t,
            ", NH ", ops.nh, ", NKV ", ops.nkv, " (need B, T >= 1 and NKV dividing NH)");
  // Grid (ceil(T / 64), NH or NKV, B): y and z are limited to 65535; T and the dq pass's row count
  // are held in int by the kernel.
  LMF_CHECK(ops.b <= 65535, op, ": B ", ops.b, " exceeds the grid limit 65535");
  LMF_CHECK(ops.nh <= 65535, op, ": NH ", ops.nh, " exceeds the grid limit 65535");
  LMF_CHECK(ops.t <= INT_MAX / 2, op, ": T ", ops.t, " exceeds the kernel's int range");
  const auto strides_ok = [](const void* p, const HeadStrides& s) {
    return reinterpret_cast<std::uintptr_t>(p) % 16 == 0 && s.batch % 8 == 0 && s.row % 8 == 0 && s.head % 8 == 0;
  };
  LMF_CHECK(strides_ok(ops.q, ops.q_s) && strides_ok(ops.k, ops.k_s) && strides_ok(ops.v, ops.v_s) &&
                strides_ok(ops.o, ops.o_s),
            op, ": q, k, v and o need 16-byte aligned storage and strides that are multiples of 8 elements");
  LMF_CHECK(ops.lse != nullptr, op, ": lse is missing");
  k::FlashAttentionParams p;
  p.q = static_cast<const k::bf16_t*>(ops.q);
  p.k = static_cast<const k::bf16_t*>(ops.k);
  p.v = static_cast<const k::bf16_t*>(ops.v);
  p.o = static_cast<k::bf16_t*>(ops.o);
  p.lse = ops.lse;
  p.q_batch_stride = ops.q_s.batch, p.q_row_stride = ops.q_s.row, p.q_head_stride = ops.q_s.head;
  p.k_batch_stride = ops.k_s.batch, p.k_row_stride = ops.k_s.row, p.k_head_stride = ops.k_s.head;
  p.v_batch_stride = ops.v_s.batch, p.v_row_stride = ops.v_s.row, p.v_head_stride = ops.v_s.head;
  p.o_batch_stride = ops.o_s.batch, p.o_row_stride = ops.o_s.row, p.o_head_stride = ops.o_s.head;
  p.batch = static_cast<int>(ops.b);
  p.heads = static_cast<int>(ops.nh);
  p.kv_heads = static_cast<int>(ops.nkv);
  p.seq = static_cast<int>(ops.t);
  p.head_dim = static_cast<int>(ops.hs);
  p.scale = 1.0f / std::sqrt(static_cast<float>(ops.hs));
  return p;
}

}  // namespace

bool flash_attention_usable(Device device, AttentionBackend backend, int64_t hs, int64_t tq, int64_t tk) {
  const auto forced = env_attention();
  if ((forced ? *forced : backend) != AttentionBackend::flash) return false;
  if ((hs != 64 && hs != 128) || tq != tk) return false;
  return capability_major(device) >= 8;
}

void flash_attention_forward(Device device, const FlashOperands& ops) {
  const k::FlashAttentionParams p = flash_params("flash_attention_forward", ops);
  DeviceGuard guard(device);
  k::flash_attention_forward(p, stream());
}

void flash_attention_backward(Device device, const FlashOperands& ops, float* dq, HeadStrides dq_s, float* dk,
                              HeadStrides dk_s, float* dv, HeadStrides dv_s, const void* dout, HeadStrides do_s) {
  k::FlashAttentionBackwardParams p;
  p.fwd = flash_params("flash_attention_backward", ops);
  LMF_CHECK(dq != nullptr && dk != nullptr && dv != nullptr && dout != nullptr,
            "flash_attention_backward: dq, dk, dv and dout are required");
  LMF_CHECK(reinterpret_cast<std::uintptr_t>(dout) % 16 == 0 && do_s.batch % 8 == 0 && do_s.row % 8 == 0 &&
                do_s.head % 8 == 0,
            "flash_attention_backward: dout needs 16-byte aligned storage and strides that are multiples of 8");
  p.dout = static_cast<const k::bf16_t*>(dout);
  p.do_batch_stride = do_s.batch, p.do_row_stride = do_s.row, p.do_head_stride = do_s.head;
  p.dq = dq, p.dk = dk, p.dv = dv;
  p.dq_batch_stride = dq_s.batch, p.dq_row_stride = dq_s.row, p.dq_head_stride = dq_s.head;
  p.dk_batch_stride = dk_s.batch, p.dk_row_stride = dk_s.row, p.dk_head_stride = dk_s.head;
  p.dv_batch_stride = dv_s.batch, p.dv_row_stride = dv_s.row, p.dv_head_stride = dv_s.head;
  DeviceGuard guard(device);
  const int64_t floats = k::flash_attention_backward_workspace(p.fwd.batch, p.fwd.heads, p.fwd.seq, p.fwd.head_dim);
  Tensor scratch = workspace(device, sizeof(float) * floats);
  p.workspace = scratch.data<float>();
  k::flash_attention_backward(p, stream());
}

// Inside a CUDA graph capture the check is skipped: it reads its verdict back to the host, which
// a capture cannot do, and a replay would not run it on the new ids anyway. The captured step's
// ids come from static buffers that the caller fills from checked data (the loader checks ids).
void check_ids_i32(Device device, const char* op, const int32_t* ids, int64_t n, int64_t v, int32_t allowed) {
  if (!compute_options().device_id_checks || detail::cuda_capturing(device)) return;
  DeviceGuard guard(device);
  Tensor first_bad = workspace(device, sizeof(long long));
  k::find_invalid_ids_i32(static_cast<long long*>(first_bad.raw_data()), ids, n, v, allowed, stream());
  report_first_bad(op, first_bad, ids, n, v);
}

void check_ids_u16(Device device, const char* op, const uint16_t* ids, int64_t n, int64_t v) {
  if (!compute_options().device_id_checks || detail::cuda_capturing(device)) return;
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

void add_layer_norm_forward(Device device, void* sum, DType sum_dtype, void* out, DType out_dtype, float* mean,
                            float* rstd, const void* x, DType x_dtype, const void* y, DType y_dtype,
                            const float* weight, const float* bias, int64_t n, int64_t c, float eps) {
  DeviceGuard guard(device);
  k::add_layernorm_forward(sum, elem_type(sum_dtype), out, elem_type(out_dtype), mean, rstd, x, elem_type(x_dtype), y,
                           elem_type(y_dtype), weight, bias, n, c, eps, stream());
}

void layer_norm_backward_typed(Device device, float* dx, float* dweight, float* dbias, const float* dout,
                               const void* x, DType x_dtype, const float* weight, const float* mean,
                               const float* rstd, int64_t n, int64_t c) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, sizeof(float) * k::layernorm_backward_workspace(n, c));
  k::layernorm_backward_typed(dx, dweight, dbias, dout, x, elem_type(x_dtype), weight, mean, rstd, nullptr, n, c,
                              scratch.data<float>(), stream());
}

void add_rms_norm_forward(Device device, void* sum, DType sum_dtype, void* out, DType out_dtype, float* rstd,
                          const void* x, DType x_dtype, const void* y, DType y_dtype, const float* weight, int64_t n,
                          int64_t c, float eps) {
  DeviceGuard guard(device);
  k::add_rmsnorm_forward(sum, elem_type(sum_dtype), out, elem_type(out_dtype), rstd, x, elem_type(x_dtype), y,
                         elem_type(y_dtype), weight, n, c, eps, stream());
}

void rms_norm_backward_typed(Device device, float* dx, float* dweight, const float* dout, const void* x,
                             DType x_dtype, const float* weight, const float* rstd, int64_t n, int64_t c) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, sizeof(float) * k::rmsnorm_backward_workspace(n, c));
  k::rmsnorm_backward_typed(dx, dweight, dout, x, elem_type(x_dtype), weight, rstd, nullptr, n, c,
                            scratch.data<float>(), stream());
}

void rotary_apply(Device device, float* out, const float* x, const float* cos, const float* sin, int64_t b,
                  int64_t nh, int64_t t, int64_t hs, int64_t stride_b, int64_t stride_h, int64_t stride_t,
                  int64_t offset, float sin_sign) {
  DeviceGuard guard(device);
  k::rotary_apply(out, x, cos, sin, b, nh, t, hs, stride_b, stride_h, stride_t, offset, sin_sign, stream());
}

void rotary_apply_typed(Device device, void* out, DType out_dtype, const void* x, DType x_dtype, const float* cos,
                        const float* sin, int64_t b, int64_t nh, int64_t t, int64_t hs, int64_t stride_b,
                        int64_t stride_h, int64_t stride_t, int64_t offset, float sin_sign) {
  DeviceGuard guard(device);
  k::rotary_apply_typed(out, elem_type(out_dtype), x, elem_type(x_dtype), cos, sin, b, nh, t, hs, stride_b, stride_h,
                        stride_t, offset, sin_sign, stream());
}

void swiglu_forward_typed(Device device, void* out, DType out_dtype, const void* gate, DType gate_dtype,
                          const void* up, DType up_dtype, int64_t n) {
  DeviceGuard guard(device);
  k::swiglu_forward_typed(out, elem_type(out_dtype), gate, elem_type(gate_dtype), up, elem_type(up_dtype), n, stream());
}

void swiglu_backward_typed(Device device, float* dgate, float* dup, const float* dout, const void* gate,
                           DType gate_dtype, const void* up, DType up_dtype, int64_t n) {
  DeviceGuard guard(device);
  k::swiglu_backward_typed(dgate, dup, dout, gate, elem_type(gate_dtype), up, elem_type(up_dtype), n, stream());
}

void gelu_backward(Device device, float* dx, const float* dout, const float* x, int64_t n) {
  DeviceGuard guard(device);
  k::gelu_backward(dx, dout, x, n, stream());
}

void gelu_forward_typed(Device device, void* out, DType out_dtype, const void* x, DType x_dtype, int64_t n) {
  DeviceGuard guard(device);
  k::gelu_forward_typed(out, elem_type(out_dtype), x, elem_type(x_dtype), n, stream());
}

void gelu_backward_typed(Device device, float* dx, const float* dout, const void* x, DType x_dtype, int64_t n) {
  DeviceGuard guard(device);
  k::gelu_backward_typed(dx, dout, x, elem_type(x_dtype), n, stream());
}

void gelu_bias_backward(Device device, float* dpre, float* dbias, const float* dout, const void* pre, DType pre_dtype,
                        int64_t rows, int64_t cols, bool accumulate) {
  DeviceGuard guard(device);
  Tensor scratch = workspace(device, dbias ? sizeof(float) * k::gelu_bias_backward_workspace(rows, cols) : 4);
  k::gelu_bias_backward(dpre, dbias, dout, pre, elem_type(pre_dtype), rows, cols, accumulate, scratch.data<float>(),
                        stream());
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

void cross_entropy_forward_typed(Device device, float* loss, float* count, float* lse, const void* logits,
                                 DType logits_dtype, const int32_t* targets, int64_t n, int64_t v,
                                 int32_t ignore_index) {
  DeviceGuard guard(device);
  Tensor losses = workspace(device, sizeof(float) * n);  // (N)
  k::cross_entropy_forward_typed(loss, count, losses.data<float>(), lse, logits, elem_type(logits_dtype), targets, n, v,
                                 ignore_index, stream());
}

void cross_entropy_backward_typed(Device device, float* dlogits, const void* logits, DType logits_dtype,
                                  const float* lse, const int32_t* targets, const float* dloss, const float* count,
                                  int64_t n, int64_t v, int32_t ignore_index) {
  DeviceGuard guard(device);
  k::cross_entropy_backward_typed(dlogits, logits, elem_type(logits_dtype), lse, targets, dloss, count, n, v,
                                  ignore_index, stream());
}

void dropout_apply_typed(Device device, void* out, DType out_dtype, const void* x, DType x_dtype, int64_t n, float p,
                         uint64_t seed, uint64_t base) {
  DeviceGuard guard(device);
  k::dropout_apply_typed(out, elem_type(out_dtype), x, elem_type(x_dtype), n, p, seed, base, stream());
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

void adamw_update_controlled(Device device, float* p, const float* g, float* m, float* v, int64_t n,
                             float weight_decay, float beta1, float beta2, float eps,
                             const kernels::StepControl* control, const float* scalars) {
  DeviceGuard guard(device);
  k::adamw_update_controlled(p, g, m, v, n, weight_decay, beta1, beta2, eps, control,
                             reinterpret_cast<const k::AdamWStepScalars*>(scalars), stream());
}

void step_decide(Device device, kernels::StepControl* control, kernels::StepRecord* ring, int64_t capacity,
                 float max_norm, float beta1, float beta2) {
  DeviceGuard guard(device);
  k::step_decide(control, ring, capacity, max_norm, beta1, beta2, stream());
}

}  // namespace lmf::cuda
