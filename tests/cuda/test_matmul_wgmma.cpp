// The Hopper GEMM (kernels/matmul_sm90.cu: TMA + wgmma) against the CPU GEMM on the same
// bf16-rounded operands: the GPT-2 124M training products (forward, both backward products, the
// vocabulary head with V = 50257, which is no multiple of the tile), odd sizes, batched and shared
// operands, unpadded operands whose padding columns hold NaN (TMA must not read past K), every
// epilogue (bias, GELU, residual, accumulate) and bf16 output. On a GPU that is not sm_90 the
// kernel cannot run and the test says so (the GPU check counts that as a failure on its H200).
#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "cuda/cuda_test_util.h"

namespace k = lmf::kernels;
using lmf::test::DeviceBuffer;

namespace {

float gelu_ref(float x) {
  return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

bool is_hopper() {
  int device = 0, major = 0, minor = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  return major == 9 && minor == 0;
}

#define LMF_SKIP_WITHOUT_HOPPER()                                                               \
  do {                                                                                          \
    LMF_SKIP_WITHOUT_GPU();                                                                     \
    if (!is_hopper()) {                                                                         \
      std::printf("skipped: the wgmma GEMM needs an sm_90 GPU\n");                              \
      WARN("skipped: not an sm_90 GPU");                                                        \
      return;                                                                                   \
    }                                                                                           \
    REQUIRE(k::gemm_wgmma_available()); /* an sm_90 device and a build without 90a: say so */   \
  } while (0)

struct Case {
  const char* name;
  int64_t batch, m, n, kk;
  bool bias = false, gelu = false, residual = false, accumulate = false, out_bf16 = false;
  bool shared_b = false;  // b (N, K) shared by every batch element (stride 0), like a weight
  int64_t pad = 0;        // extra columns after K in each operand row, filled with NaN
};

std::vector<k::bf16_t> to_device_bf16(const std::vector<float>& v) {
  std::vector<k::bf16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
  return out;
}

// An operand (batches, rows, K) as bf16 rows of ld = K + pad elements, the pad filled with NaN;
// `values` returns the bf16-rounded (batches, rows, K) values the CPU multiplies.
std::vector<k::bf16_t> make_operand(int64_t batches, int64_t rows, int64_t kk, int64_t ld, uint64_t seed, float scale,
                                    std::vector<float>& values) {
  values = lmf::test::round_bf16(lmf::test::random_vector(batches * rows * kk, seed, scale));
  std::vector<float> padded(batches * rows * ld, NAN);
  for (int64_t r = 0; r < batches * rows; ++r)
    for (int64_t c = 0; c < kk; ++c) padded[r * ld + c] = values[r * kk + c];
  return to_device_bf16(padded);
}

void check_case(const Case& c, uint64_t seed) {
  CAPTURE(c.name, c.batch, c.m, c.n, c.kk, c.bias, c.gelu, c.residual, c.accumulate, c.out_bf16, c.shared_b, c.pad);
  const int64_t ld = c.kk + c.pad;
  const int64_t batch_b = c.shared_b ? 1 : c.batch;
  std::vector<float> a, b;
  DeviceBuffer<k::bf16_t> da(make_operand(c.batch, c.m, c.kk, ld, seed, 1.f, a));
  DeviceBuffer<k::bf16_t> db(make_operand(batch_b, c.n, c.kk, ld, seed + 1, 0.1f, b));
  const auto bias = lmf::test::random_vector(c.n, seed + 2);
  const auto c0 = lmf::test::round_bf16(lmf::test::random_vector(c.batch * c.m * c.n, seed + 3));
  const auto residual = lmf::test::random_vector(c.batch * c.m * c.n, seed + 4);
  DeviceBuffer<float> dbias(bias), dresidual(residual);
  DeviceBuffer<float> out_f32(c.out_bf16 ? 1 : c.batch * c.m * c.n);
  DeviceBuffer<k::bf16_t> out_bf16(c.out_bf16 ? c.batch * c.m * c.n : 1);
  if (c.accumulate) {
    if (c.out_bf16) {
      out_bf16.upload(to_device_bf16(c0));
    } else {
      out_f32.upload(c0);
    }
  }

  k::GemmParams p;
  p.a = da.get();
  p.b = db.get();
  if (c.out_bf16) {
    p.c_bf16 = out_bf16.get();
  } else {
    p.c_f32 = out_f32.get();
  }
  p.bias = c.bias ? dbias.get() : nullptr;
  p.residual = c.residual ? dresidual.get() : nullptr;
  p.m = c.m, p.n = c.n, p.k = c.kk;
  p.lda = ld, p.ldb = ld, p.ldc = c.n;
  p.stride_a = c.m * ld, p.stride_b = c.shared_b ? 0 : c.n * ld, p.stride_c = c.m * c.n;
  p.batch = c.batch;
  p.gelu = c.gelu;
  p.accumulate = c.accumulate;
  REQUIRE(k::gemm_wgmma_supports(p));
  k::gemm_wgmma(p, nullptr);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<float> gpu;
  if (c.out_bf16) {
    const std::vector<k::bf16_t> raw = out_bf16.download();
    for (const k::bf16_t& x : raw) gpu.push_back(__bfloat162float(x));
  } else {
    gpu = out_f32.download();
  }

  // The CPU on the same bf16 values: only the f32 summation order differs.
  std::vector<float> ref(c.batch * c.m * c.n, 0.f);
  for (int64_t i = 0; i < c.batch; ++i)
    lmf::cpu::gemm(a.data() + i * c.m * c.kk, b.data() + (c.shared_b ? 0 : i * c.n * c.kk), ref.data() + i * c.m * c.n,
                   c.m, c.n, c.kk, false, true);
  for (int64_t i = 0; i < c.batch * c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      float& v = ref[i * c.n + j];
      if (c.bias) v += bias[j];
      if (c.gelu) v = gelu_ref(v);
      if (c.residual) v += residual[i * c.n + j];
      if (c.accumulate) v += c0[i * c.n + j];
    }
  const double scale = std::max(1.0, lmf::test::max_abs(ref));
  double worst = 0;  // beyond the allowance: summation order (1e-4 of the scale), bf16 output rounding
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(gpu[i])) {
      worst = INFINITY;
      break;
    }
    const double allowed = 1e-4 * scale + (c.out_bf16 ? std::ldexp(std::fabs(double(ref[i])), -8) : 0.0);
    worst = std::max(worst, std::fabs(double(gpu[i]) - double(ref[i])) - allowed);
  }
  CHECK(worst <= 0);
}

}  // namespace

TEST_CASE("wgmma GEMM at the GPT-2 124M training shapes", "[cuda][matmul][wgmma]") {
  LMF_SKIP_WITHOUT_HOPPER();
  constexpr int64_t BT = 1024, C = 768, V = 50257;
  uint64_t seed = 5000;
  // Forward (x · Wᵀ + bias): qkv, attention projection (+ residual), MLP up (+ GELU), MLP down (+ residual).
  check_case({"qkv", 1, BT, 3 * C, C, true}, seed += 10);
  check_case({"attn proj + residual", 1, BT, C, C, true, false, true}, seed += 10);
  check_case({"fc + gelu", 1, BT, 4 * C, C, true, true}, seed += 10);
  check_case({"fc proj + residual", 1, BT, C, 4 * C, true, false, true}, seed += 10);
  // Backward: dx = dy · W (M = BT, K = out features), dW += dyᵀ · x (M = out features, K = BT).
  check_case({"dx of fc proj", 1, BT, 4 * C, C}, seed += 10);
  check_case({"dx of qkv", 1, BT, C, 3 * C}, seed += 10);
  check_case({"dW of qkv (accumulate)", 1, 3 * C, C, BT, false, false, false, true}, seed += 10);
  check_case({"dW of fc (accumulate)", 1, 4 * C, C, BT, false, false, false, true}, seed += 10);
  // The vocabulary head: V = 50257 columns (393 tiles of 128, the last one 81 wide), and its dW.
  check_case({"lm head", 1, 512, V, C}, seed += 10);
  check_case({"dW of lm head", 1, V, C, 512}, seed += 10);
  // bf16 output, as the mixed-precision forward writes activations.
  check_case({"qkv, bf16 out", 1, BT, 3 * C, C, true, false, false, false, true}, seed += 10);
}

TEST_CASE("wgmma GEMM with sizes that are no multiple of the tiles", "[cuda][matmul][wgmma]") {
  LMF_SKIP_WITHOUT_HOPPER();
  uint64_t seed = 7000;
  check_case({"tiny", 1, 1, 1, 8}, seed += 10);
  check_case({"odd", 1, 77, 130, 48, false, false, false, false, false, false, 8}, seed += 10);
  check_case({"K not a multiple of 64", 1, 300, 200, 200, true}, seed += 10);
  check_case({"K below one k16 step", 2, 129, 257, 8, true, true}, seed += 10);
  check_case({"batched, shared b", 3, 100, 96, 136, false, false, false, false, false, true, 16}, seed += 10);
  check_case({"batched, every epilogue", 2, 257, 131, 72, true, true, true}, seed += 10);
  check_case({"accumulate, bf16 out", 2, 64, 100, 40, false, false, false, true, true}, seed += 10);
  check_case({"odd N, bf16 out", 1, 130, 77, 64, true, false, false, false, true}, seed += 10);
}

TEST_CASE("wgmma GEMM refuses what TMA cannot read; gemm() then needs packed operands", "[cuda][matmul][wgmma]") {
  LMF_SKIP_WITHOUT_GPU();
  DeviceBuffer<k::bf16_t> a(64 * 64), b(64 * 64);
  DeviceBuffer<float> c(64 * 64);
  k::GemmParams p;
  p.a = a.get(), p.b = b.get(), p.c_f32 = c.get();
  p.m = 45, p.n = 45, p.k = 45, p.lda = 45, p.ldb = 45, p.ldc = 45;
  CHECK_FALSE(k::gemm_wgmma_supports(p));  // 90-byte rows: TMA needs 16-byte strides
  p.lda = p.ldb = 48;
  CHECK(k::gemm_wgmma_supports(p));
  p.a = a.get() + 1;  // 2-byte aligned
  CHECK_FALSE(k::gemm_wgmma_supports(p));
  // Not wgmma-readable and not packed: no path can take it, and gemm says so.
  CHECK_THROWS_WITH(k::gemm(p, k::MatmulBackend::wgmma, nullptr), Catch::Contains("must be packed"));
}
