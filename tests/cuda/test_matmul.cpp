// The tensor-core GEMMs (kernels/matmul.cu, and matmul_sm90.cu on sm_90) and the cuBLASLt baseline against the CPU GEMM: every
// transpose, batched and shared operands, sizes that are not multiples of the tiles, and the bias,
// GELU and accumulate epilogues. Outputs start as NaN so unwritten elements fail.
#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "cuda/cuda_test_util.h"
#include "lmforge/ops.h"

namespace k = lmf::kernels;
using lmf::test::DeviceBuffer;

namespace {

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

float gelu_ref(float x) {
  return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

struct Case {
  int64_t batch, m, n, k;
  bool trans_a, trans_b, bias, gelu, accumulate;
};

// c (batch, M, N) = op(a) · op(b) on the CPU, then bias, GELU (or += onto c0).
std::vector<float> cpu_reference(const Case& c, const std::vector<float>& a, const std::vector<float>& b,
                                 const std::vector<float>& bias, const std::vector<float>& c0) {
  std::vector<float> out = c0;
  for (int64_t i = 0; i < c.batch; ++i) {
    lmf::cpu::gemm(a.data() + i * c.m * c.k, b.data() + i * c.k * c.n, out.data() + i * c.m * c.n, c.m, c.n,
                   c.k, c.trans_a, c.trans_b, c.accumulate);
  }
  for (int64_t i = 0; i < c.batch * c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      float& v = out[i * c.n + j];
      if (c.bias) v += bias[j];
      if (c.gelu) v = gelu_ref(v);
    }
  return out;
}

void check_case(const Case& c, k::MatmulBackend backend, uint64_t seed) {
  CAPTURE(c.batch, c.m, c.n, c.k, c.trans_a, c.trans_b, c.bias, c.gelu, c.accumulate, int(backend));
  const auto a = lmf::test::random_vector(c.batch * c.m * c.k, seed);
  const auto b = lmf::test::random_vector(c.batch * c.k * c.n, seed + 1);
  const auto bias = lmf::test::random_vector(c.n, seed + 2);
  const auto c0 = lmf::test::random_vector(c.batch * c.m * c.n, seed + 3);
  const int64_t mp = round_up(c.m, k::kGemmRowPad), np = round_up(c.n, k::kGemmRowPad);
  const int64_t kp = round_up(c.k, k::kGemmKPad);

  DeviceBuffer<float> da(a), db(b), dbias(bias);
  DeviceBuffer<k::bf16_t> pa(c.batch * mp * kp), pb(c.batch * np * kp);
  // op(a) (M, K) and op(b)ᵀ (N, K), K-contiguous, as the host glue packs them.
  k::pack_bf16(pa.get(), da.get(), c.batch, c.m, c.k, mp, kp, c.m * c.k, c.trans_a ? 1 : c.k,
               c.trans_a ? c.m : 1, nullptr);
  k::pack_bf16(pb.get(), db.get(), c.batch, c.n, c.k, np, kp, c.k * c.n, c.trans_b ? c.k : 1,
               c.trans_b ? 1 : c.n, nullptr);
  DeviceBuffer<float> out(c.batch * c.m * c.n);
  if (c.accumulate) out.upload(c0);

  k::GemmParams p;
  p.a = pa.get();
  p.b = pb.get();
  p.c_f32 = out.get();
  p.bias = c.bias ? dbias.get() : nullptr;
  p.m = c.m, p.n = c.n, p.k = kp;
  p.lda = kp, p.ldb = kp, p.ldc = c.n;
  p.stride_a = mp * kp, p.stride_b = np * kp, p.stride_c = c.m * c.n;
  p.batch = c.batch;
  p.gelu = c.gelu;
  p.accumulate = c.accumulate;
  k::gemm(p, backend, nullptr);
  const std::vector<float> gpu = out.download();

  const auto ref = cpu_reference(c, a, b, bias, c0);
  const auto ref_rounded = cpu_reference(c, lmf::test::round_bf16(a), lmf::test::round_bf16(b), bias, c0);
  // Same bf16 inputs: only the f32 summation order differs.
  CHECK(lmf::test::max_abs_diff(gpu, ref_rounded) <= 1e-4 * std::max(1.0, lmf::test::max_abs(ref)));
  // Against the f32 inputs: within the error budget of a bf16 computation.
  CHECK(lmf::test::max_abs_diff(gpu, ref) <= 1.5 * lmf::test::bf16_error(ref, ref_rounded));
}

}  // namespace

TEST_CASE("gemm matches the CPU for every transpose, odd sizes and both backends", "[cuda][matmul]") {
  LMF_SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (auto backend : {k::MatmulBackend::custom, k::MatmulBackend::cublas, k::MatmulBackend::wgmma})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        check_case({1, 77, 130, 45, ta, tb, false, false, false}, backend, seed += 10);
        check_case({3, 129, 64, 300, ta, tb, false, false, false}, backend, seed += 10);
      }
}

TEST_CASE("gemm epilogues: bias, bias with GELU, and accumulate", "[cuda][matmul]") {
  LMF_SKIP_WITHOUT_GPU();
  uint64_t seed = 900;
  for (auto backend : {k::MatmulBackend::custom, k::MatmulBackend::cublas, k::MatmulBackend::wgmma}) {
    check_case({2, 200, 257, 96, false, true, true, false, false}, backend, seed += 10);
    check_case({2, 200, 257, 96, false, true, true, true, false}, backend, seed += 10);
    check_case({2, 64, 100, 33, true, false, false, false, true}, backend, seed += 10);
  }
}

TEST_CASE("gemm at a GPT-2 shape agrees with cuBLASLt", "[cuda][matmul]") {
  LMF_SKIP_WITHOUT_GPU();
  check_case({1, 512, 2304, 768, false, true, true, false, false}, k::MatmulBackend::custom, 4242);
}

namespace {

lmf::Tensor rounded(const lmf::Tensor& t) { return t.to(lmf::DType::bf16).to(lmf::DType::f32); }

struct OpResult {
  std::vector<float> out, da, db;
};

// c = matmul(a, b), then the gradients of sum(c * c); on a's device.
OpResult run_matmul(const lmf::Tensor& a_in, const lmf::Tensor& b_in, bool ta, bool tb) {
  lmf::Tensor a = a_in.detach().set_requires_grad(true), b = b_in.detach().set_requires_grad(true);
  lmf::Tensor c = lmf::matmul(a, b, ta, tb);
  lmf::sum(lmf::mul(c, c)).backward();
  return {c.to_vector(), a.grad().to_vector(), b.grad().to_vector()};
}

}  // namespace

TEST_CASE("matmul op on the GPU follows the CPU, forward and backward", "[cuda][matmul]") {
  LMF_SKIP_WITHOUT_GPU();
  lmf::Generator gen(7);
  for (auto backend : {lmf::MatmulBackend::custom, lmf::MatmulBackend::cublas, lmf::MatmulBackend::wgmma}) {
    const lmf::ComputeScope scope({.matmul_backend = backend});
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        CAPTURE(ta, tb, int(backend));
        const lmf::Tensor a = lmf::Tensor::randn(ta ? lmf::Shape{3, 40, 33} : lmf::Shape{3, 33, 40}, gen);
        const lmf::Tensor b = lmf::Tensor::randn(tb ? lmf::Shape{50, 40} : lmf::Shape{40, 50}, gen);
        const OpResult ref = run_matmul(a, b, ta, tb);
        const OpResult ref_bf16 = run_matmul(rounded(a), rounded(b), ta, tb);
        const OpResult gpu = run_matmul(a.to(lmf::Device::cuda()), b.to(lmf::Device::cuda()), ta, tb);
        using lmf::test::bf16_error;
        using lmf::test::max_abs_diff;
        CHECK(max_abs_diff(gpu.out, ref.out) <= 1.5 * bf16_error(ref.out, ref_bf16.out));
        // The backward multiplies bf16-rounded gradients too: one more rounding than the budget.
        CHECK(max_abs_diff(gpu.da, ref.da) <= 3 * bf16_error(ref.da, ref_bf16.da));
        CHECK(max_abs_diff(gpu.db, ref.db) <= 3 * bf16_error(ref.db, ref_bf16.db));
      }
  }
}
