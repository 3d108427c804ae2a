// Host glue for matrix products: f32 operands (any transpose, batched or shared) are packed into the
// padded, K-contiguous bf16 layout of kernels/matmul.cu, then multiplied by the tensor-core kernel
// or cuBLASLt or the Hopper kernel (ComputeOptions::matmul_backend, passed by the op; LMF_MATMUL overrides). Packing is where transposes disappear, so one GEMM layout
// serves the forward and both backward products. Accumulation is fp32; inputs are rounded to bf16.
#include <cstdlib>
#include <optional>
#include <string>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.h"
#include "lmforge/core/compute.h"

namespace lmf::cuda {
namespace {

namespace k = lmf::kernels;

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// LMF_MATMUL, read once: a benchmark or the GPU check can switch every product of a process
// without a config change. An unknown value is an error, not a silent default.
std::optional<k::MatmulBackend> env_backend() {
  static const std::optional<k::MatmulBackend> choice = []() -> std::optional<k::MatmulBackend> {
    const char* v = std::getenv("LMF_MATMUL");
    if (v == nullptr || *v == '\0') return std::nullopt;
    const std::string s(v);
    if (s == "custom" || s == "mma") return k::MatmulBackend::custom;
    if (s == "cublas") return k::MatmulBackend::cublas;
    if (s == "wgmma") return k::MatmulBackend::wgmma;
    throw Error("LMF_MATMUL: '" + s + "' is not one of custom, mma, cublas, wgmma");
  }();
  return choice;
}

k::MatmulBackend backend(const ComputeOptions& options) {
  if (const auto forced = env_backend()) return *forced;
  switch (options.matmul_backend) {
    case MatmulBackend::cublas: return k::MatmulBackend::cublas;
    case MatmulBackend::wgmma: return k::MatmulBackend::wgmma;
    case MatmulBackend::custom: break;
  }
  return k::MatmulBackend::custom;
}

// op(a) (M, K) of each batch element -> bf16 (batch_a, Mp, Kp); a is (M, K), or (K, M) when trans.
Tensor pack_a(Device device, const float* a, int64_t batch, int64_t stride, int64_t m, int64_t kk, bool trans,
              int64_t mp, int64_t kp) {
  Tensor packed = workspace(device, 2 * batch * mp * kp);
  const int64_t sr = trans ? 1 : kk, sc = trans ? m : 1;
  k::pack_bf16(reinterpret_cast<k::bf16_t*>(packed.raw_data()), a, batch, m, kk, mp, kp, stride, sr, sc, stream());
  return packed;
}

// op(b) (K, N) -> its transpose bf16 (batch_b, Np, Kp); b is (K, N), or (N, K) when trans.
Tensor pack_b(Device device, const float* b, int64_t batch, int64_t stride, int64_t n, int64_t kk, bool trans,
              int64_t np, int64_t kp) {
  Tensor packed = workspace(device, 2 * batch * np * kp);
  const int64_t sr = trans ? kk : 1, sc = trans ? 1 : n;
  k::pack_bf16(reinterpret_cast<k::bf16_t*>(packed.raw_data()), b, batch, n, kk, np, kp, stride, sr, sc, stream());
  return packed;
}

void run(Device device, int64_t batch, const float* a, int64_t stride_a, const float* b, int64_t stride_b,
         float* c, int64_t stride_c, int64_t m, int64_t n, int64_t kk, bool trans_a, bool trans_b,
         const float* bias, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  DeviceGuard guard(device);
  const int64_t mp = round_up(m, k::kGemmRowPad), np = round_up(n, k::kGemmRowPad);
  const int64_t kp = round_up(kk, k::kGemmKPad);
  const int64_t batch_a = stride_a == 0 ? 1 : batch, batch_b = stride_b == 0 ? 1 : batch;
  const Tensor pa = pack_a(device, a, batch_a, stride_a, m, kk, trans_a, mp, kp);
  const Tensor pb = pack_b(device, b, batch_b, stride_b, n, kk, trans_b, np, kp);
  k::GemmParams p;
  p.a = reinterpret_cast<const k::bf16_t*>(pa.raw_data());
  p.b = reinterpret_cast<const k::bf16_t*>(pb.raw_data());
  p.c_f32 = c;
  p.bias = bias;
  p.m = m, p.n = n, p.k = kp;
  p.lda = kp, p.ldb = kp, p.ldc = n;
  p.stride_a = stride_a == 0 ? 0 : mp * kp;
  p.stride_b = stride_b == 0 ? 0 : np * kp;
  p.stride_c = stride_c;
  p.batch = batch;
  p.accumulate = accumulate;
  k::gemm(p, backend(options), stream());
  if (!gelu_out) return;
  // The GELU of the finished c, beside it (the kernel's own GELU epilogue would replace c).
  if (stride_c == m * n || batch == 1) {
    k::gelu_forward(gelu_out, c, batch * m * n, stream());
  } else {
    for (int64_t i = 0; i < batch; ++i) k::gelu_forward(gelu_out + i * stride_c, c + i * stride_c, m * n, stream());
  }
}

}  // namespace

void gemm(Device device, const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k,
          bool trans_a, bool trans_b, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  run(device, 1, a, 0, b, 0, c, 0, m, n, k, trans_a, trans_b, nullptr, accumulate, gelu_out, options);
}

void gemm_batched(Device device, int64_t batch, const float* a, int64_t stride_a, const float* b,
                  int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k, bool trans_a,
                  bool trans_b, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  LMF_CHECK(stride_c != 0 || batch <= 1, "gemm_batched: c's stride must not be 0");
  if (batch == 1) stride_a = stride_b = 0;  // one element: nothing to share or to step over
  run(device, batch, a, stride_a, b, stride_b, c, stride_c, m, n, k, trans_a, trans_b, nullptr, accumulate,
      gelu_out, options);
}

void linear_forward(Device device, float* out, const float* x, const float* w, const float* bias, int64_t n,
                    int64_t out_features, int64_t in_features, float* gelu_out, const ComputeOptions& options) {
  // out (N, OUT) = x (N, IN) · w (OUT, IN)ᵀ: w is already the packed "N x K" operand's layout.
  run(device, 1, x, 0, w, 0, out, 0, n, out_features, in_features, false, true, bias, false, gelu_out, options);
}

}  // namespace lmf::cuda
