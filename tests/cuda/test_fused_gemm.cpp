// The GEMM's fused bias + GELU epilogue with the pre-activation written beside the output (aux), its
// predicated loads of unpadded bf16 operands read in place (ragged M, N, K; the columns past K of
// each row are NaN, so a load that reads past K poisons the result), the fused dGELU + bias-gradient
// backward (gelu_bias_backward), and the ops linear / linear_gelu on the GPU against the CPU with
// f32 and bf16 activations. Every backend: custom (mma.sync), cublas, wgmma (its fallback off sm_90).
//
// Tolerances. With both sides multiplying the same bf16-representable values, the GPU and CPU
// products differ only in the f32 summation order: 1e-4 of the output's scale, as test_matmul.cpp
// (K <= 300 terms of magnitude <= ~10, f32 unit roundoff 6e-8: K · 6e-8 · 10 ≈ 2e-4 of a term
// sum, in practice far less since the errors do not all align). A bf16 output adds its own
// rounding: half an ulp, 2^-8 of the value (see test_fused_norms.cpp for the derivation).
#include <cmath>
#include <limits>

#include "backend/cpu/cpu_kernels.h"
#include "cuda/cuda_test_util.h"
#include "lmforge/core/compute.h"
#include "lmforge/ops.h"

namespace k = lmf::kernels;
using lmf::DType;
using lmf::Tensor;
using lmf::test::DeviceBuffer;
using lmf::test::max_abs;
using lmf::test::max_abs_diff;
using lmf::test::random_vector;
using lmf::test::round_bf16;

namespace {

constexpr double kHalfUlp = 1.0 / 256;

float gelu_ref(float x) { return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x))); }

std::vector<uint16_t> bf16_bits(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = lmf::bf16(v[i]).bits;
  return out;
}
std::vector<float> from_bits(const std::vector<uint16_t>& bits) {
  std::vector<float> v(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) {
    lmf::bf16 b;
    b.bits = bits[i];
    v[i] = static_cast<float>(b);
  }
  return v;
}

// |got - want| <= 2^-8 (|want| + slack) + slack everywhere (NaN fails).
bool bf16_close(const std::vector<float>& got, const std::vector<float>& want, double slack) {
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(double(got[i]) - double(want[i])) <= kHalfUlp * (std::fabs(double(want[i])) + slack) + slack))
      return false;
  return true;
}

// a (M, K) and b (N, K) stored with leading dimension K + 8, the 8 extra columns NaN.
std::vector<float> with_nan_tail(const std::vector<float>& v, int64_t rows, int64_t kk) {
  std::vector<float> out(rows * (kk + 8), std::numeric_limits<float>::quiet_NaN());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < kk; ++c) out[r * (kk + 8) + c] = v[r * kk + c];
  return out;
}

void check_gelu_aux(int64_t m, int64_t n, int64_t kk, bool out_bf16, k::MatmulBackend backend, uint64_t seed) {
  CAPTURE(m, n, kk, out_bf16, int(backend));
  const auto a = round_bf16(random_vector(m * kk, seed)), b = round_bf16(random_vector(n * kk, seed + 1));
  const auto bias = random_vector(n, seed + 2);
  // The CPU on the same bf16 values: pre = a bᵀ + bias, out = gelu(pre).
  std::vector<float> pre(m * n);
  lmf::cpu::gemm(a.data(), b.data(), pre.data(), m, n, kk, false, true, false);
  std::vector<float> out_ref(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      pre[i * n + j] += bias[j];
      out_ref[i * n + j] = gelu_ref(pre[i * n + j]);
    }
  const int64_t ld = kk + 8;
  DeviceBuffer<uint16_t> da(bf16_bits(with_nan_tail(a, m, kk))), db(bf16_bits(with_nan_tail(b, n, kk)));
  DeviceBuffer<float> dbias(bias), c32(m * n), aux32(m * n);
  DeviceBuffer<uint16_t> c16(m * n), aux16(m * n);
  k::GemmParams p;
  p.a = reinterpret_cast<const k::bf16_t*>(da.get());
  p.b = reinterpret_cast<const k::bf16_t*>(db.get());
  p.bias = dbias.get();
  p.m = m, p.n = n, p.k = kk;
  p.lda = ld, p.ldb = ld, p.ldc = n;
  p.gelu = true;
  if (out_bf16) {
    p.c_bf16 = reinterpret_cast<k::bf16_t*>(c16.get());
    p.aux_bf16 = reinterpret_cast<k::bf16_t*>(aux16.get());
  } else {
    p.c_f32 = c32.get();
    p.aux_f32 = aux32.get();
  }
  REQUIRE(k::gemm_custom_supports(p));
  k::gemm(p, backend, nullptr);
  const double tol = 1e-4 * std::max(1.0, max_abs(pre));
  if (out_bf16) {
    CHECK(bf16_close(from_bits(c16.download()), out_ref, tol));
    CHECK(bf16_close(from_bits(aux16.download()), pre, tol));
  } else {
    CHECK(max_abs_diff(c32.download(), out_ref) <= tol);
    CHECK(max_abs_diff(aux32.download(), pre) <= tol);
  }
}

}  // namespace

TEST_CASE("GEMM + bias + GELU writes the pre-activation and the GELU in one pass, unpadded operands in place",
          "[cuda][matmul][fused]") {
  LMF_SKIP_WITHOUT_GPU();
  uint64_t seed = 3000;
  for (auto backend : {k::MatmulBackend::custom, k::MatmulBackend::cublas, k::MatmulBackend::wgmma})
    for (const bool out_bf16 : {false, true}) {
      check_gelu_aux(77, 130, 72, out_bf16, backend, seed += 10);   // M, N not multiples of 128, K of 32
      check_gelu_aux(300, 257, 200, out_bf16, backend, seed += 10);  // several tiles, ragged in each dim
      check_gelu_aux(5, 9, 8, out_bf16, backend, seed += 10);        // one K chunk
      check_gelu_aux(128, 256, 768, out_bf16, backend, seed += 10);  // GPT-2's K, exact tiles
    }
}

TEST_CASE("the custom GEMM refuses operands it cannot read in place", "[cuda][matmul][fused]") {
  LMF_SKIP_WITHOUT_GPU();
  DeviceBuffer<uint16_t> a(64 * 20), b(64 * 20);
  DeviceBuffer<float> c(64 * 64);
  k::GemmParams p;
  p.a = reinterpret_cast<const k::bf16_t*>(a.get());
  p.b = reinterpret_cast<const k::bf16_t*>(b.get());
  p.c_f32 = c.get();
  p.m = 64, p.n = 64, p.k = 20;
  p.lda = 20, p.ldb = 20, p.ldc = 64;  // rows of 40 bytes: not 16-byte aligned
  CHECK_FALSE(k::gemm_custom_supports(p));
  CHECK_THROWS_WITH(k::gemm(p, k::MatmulBackend::custom, nullptr), Catch::Contains("multiples of 8"));
}

TEST_CASE("gelu_bias_backward matches the CPU GELU backward and column sums, f32 and bf16 pre", "[cuda][gelu][fused]") {
  LMF_SKIP_WITHOUT_GPU();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{301, 100}, {7, 33}, {600, 768}};
  for (const auto& shape : shapes) {
    const int64_t rows = shape.first, cols = shape.second;
    for (const bool pre16 : {false, true})
      for (const bool accumulate : {false, true}) {
        CAPTURE(rows, cols, pre16, accumulate);
        const auto pre0 = random_vector(rows * cols, rows + cols, 2.f), dout = random_vector(rows * cols, 5);
        const auto pre = pre16 ? round_bf16(pre0) : pre0;
        const auto db0 = random_vector(cols, 6);
        std::vector<float> dpre_ref(rows * cols), db_ref(cols);
        lmf::cpu::gelu_backward(dpre_ref.data(), dout.data(), pre.data(), rows * cols);
        lmf::cpu::column_sums(dpre_ref.data(), db_ref.data(), rows, cols, 1.f, false);
        if (accumulate)
          for (int64_t j = 0; j < cols; ++j) db_ref[j] += db0[j];
        DeviceBuffer<float> dd(dout), dpre(rows * cols), db(db0), work(k::gelu_bias_backward_workspace(rows, cols));
        DeviceBuffer<float> p32(pre16 ? std::vector<float>(1) : pre);
        DeviceBuffer<uint16_t> p16(pre16 ? bf16_bits(pre) : std::vector<uint16_t>(1));
        k::gelu_bias_backward(dpre.get(), db.get(), dd.get(), pre16 ? static_cast<const void*>(p16.get()) : p32.get(),
                              pre16 ? k::ElemType::bf16 : k::ElemType::f32, rows, cols, accumulate, work.get(), nullptr);
        // dpre: the same formula per element, tanhf against std::tanh: a few f32 ulps.
        CHECK(max_abs_diff(dpre.download(), dpre_ref) <= 1e-6 * std::max(1.0, max_abs(dpre_ref)));
        // db: sums of `rows` terms in another order: rows · 2^-24 of the summed magnitudes.
        double mag = 0;
        for (float v : dpre_ref) mag += std::fabs(v);
        CHECK(max_abs_diff(db.download(), db_ref) <= 2 * double(rows) * 6e-8 * std::max(1.0, mag / double(cols)));
      }
  }
}

namespace {

struct LinearResult {
  Tensor out;
  std::vector<float> dx, dw, db;
};

LinearResult run_linear(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, bool gelu, const Tensor& g) {
  Tensor x = x_in.detach().set_requires_grad(true), w = w_in.detach().set_requires_grad(true);
  Tensor b = b_in.detach().set_requires_grad(true);
  Tensor out = gelu ? lmf::linear_gelu(x, w, b) : lmf::linear(x, w, b);
  lmf::sum(lmf::mul(out.to(DType::f32), g.to(out.device()))).backward();
  return {out, x.grad().to_vector(), w.grad().to_vector(), b.grad().to_vector()};
}

}  // namespace

TEST_CASE("linear and linear_gelu on the GPU equal the CPU with f32 and bf16 activations", "[cuda][matmul][fused]") {
  LMF_SKIP_WITHOUT_GPU();
  lmf::Generator gen(11);
  // bf16-representable values, so both devices multiply the same numbers (the GPU rounds to bf16).
  const Tensor x = Tensor::randn({3, 37, 72}, gen).to(DType::bf16).to(DType::f32);
  const Tensor w = Tensor::randn({130, 72}, gen).to(DType::bf16).to(DType::f32);
  const Tensor b = Tensor::randn({130}, gen);
  const Tensor g = Tensor::randn({3, 37, 130}, gen).to(DType::bf16).to(DType::f32);
  const lmf::Device gpu = lmf::Device::cuda();
  for (auto backend : {lmf::MatmulBackend::custom, lmf::MatmulBackend::cublas, lmf::MatmulBackend::wgmma})
    for (const bool gelu : {false, true})
      for (const DType xt : {DType::f32, DType::bf16}) {
        CAPTURE(int(backend), gelu, int(xt));
        const lmf::ComputeScope scope({.matmul_backend = backend});
        const LinearResult ref = run_linear(x.to(xt), w, b, gelu, g);
        const LinearResult got = run_linear(x.to(xt).to(gpu), w.to(gpu), b.to(gpu), gelu, g);
        REQUIRE(got.out.dtype() == ref.out.dtype());
        const std::vector<float> want = ref.out.to(DType::f32).to_vector();
        const double tol = 1e-4 * std::max(1.0, max_abs(want));
        if (xt == DType::bf16) {
          CHECK(bf16_close(got.out.to(DType::f32).to_vector(), want, tol));
        } else {
          CHECK(max_abs_diff(got.out.to_vector(), want) <= tol);
        }
        // The backward's products round the f32 dpre (or g) to bf16 on the GPU, not on the CPU: each
        // term moves by up to 2^-8 of itself, with signs that do not align, so the gradient moves
        // by about 2^-8 of its own scale; allowed: 3 x that, as test_matmul.cpp allows 3 x the
        // bf16 budget for its backward.
        const auto grad_tol = [](const std::vector<float>& r) { return 3 * 2 * kHalfUlp * std::max(1.0, max_abs(r)); };
        CHECK(max_abs_diff(got.dx, ref.dx) <= grad_tol(ref.dx));
        CHECK(max_abs_diff(got.dw, ref.dw) <= grad_tol(ref.dw));
        CHECK(max_abs_diff(got.db, ref.db) <= 1e-5 * std::max(1.0, max_abs(ref.db)));
      }
}
