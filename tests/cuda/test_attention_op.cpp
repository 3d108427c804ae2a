// lmf::attention and lmf::causal_self_attention on CUDA against the same ops on the CPU (the
// reference): forward values and every input gradient, on the tensor-core flash path (HS 64 and 128)
// and the f32 fallback (HS 32, ComputeOptions::attention_backend = f32), for GPT heads, grouped-query
// heads, T = 1 and lengths that are not multiples of the 64-row tiles, f32 and bf16 inputs.
//
// Tolerances, normwise (rel = ‖gpu - ref‖ / ‖ref‖ per tensor), with u = 2^-9 the unit roundoff of bf16:
//   pert = rel(CPU op on bf16-rounded inputs and output gradient, CPU op): what rounding the operands
//          to bf16 does to the result (for bf16 inputs, which round to themselves, only the rounding of
//          the output gradient and, in the forward, of the reference's own bf16 output).
//   flash: rel <= 4 pert + 3u. The kernel rounds the operands (pert; 4x headroom as
//          tests/cuda/test_flash_attention.cpp, since it also rounds P and dS, errors of the same order)
//          and, beyond what pert models, each result passes through at most three more bf16 roundings of
//          relative size <= u: P or dS before its second product, O before it is stored, and O in the
//          backward's D = rowsum(dO * O).
//   f32:   rel <= pert / 4 + 1e-5 (+ u when the output is stored as bf16). f32 math in another order
//          than the CPU's (1e-5 is ~100 f32 ulps, sums over at most a few hundred keys); a bf16 output
//          can land one bf16 rounding away from the CPU's where the two f32 results straddle a boundary.
// On the f32 path with f32 inputs the forward must also sit far inside what bf16 operands would cost,
// and on the flash path far outside f32 agreement: so each case proves which kernel ran.
// Gradients that are exactly zero (dq and dk at T = 1: one key, P = 1, dS = P (dP - D) = 0) have no
// relative error; there the bound is absolute, kZeroGrad: dP and D are two f32 sums of the same HS
// <= 128 products of unit-normal values, so |dP - D| <= 2 HS eps_f32 sum|dO V| ~ 2 * 128 * 6e-8 * 82
// ~ 1.3e-3 at worst, times scale |k| <= 4 / sqrt(HS) for dq (and |q| for dk) -> under 1e-3.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "cuda/cuda_test_util.h"
#include "lmforge/core/compute.h"
#include "lmforge/ops.h"

using lmf::DType;
using lmf::Tensor;

namespace {

constexpr double kU = 1.0 / 512;  // bf16 unit roundoff, 2^-9
constexpr double kZeroGrad = 1e-3;  // largest element of a gradient whose exact value is 0 (above)

using Op = std::function<Tensor(const std::vector<Tensor>&)>;

struct Run {
  std::vector<float> out;
  DType out_dtype = DType::f32;
  std::vector<std::vector<float>> grads;
};

// op on copies of `inputs` (CPU f32) converted to `dtype` and moved to `device`, then backward with
// `dout` (CPU f32): the output and each input's gradient, read back to the host.
Run run(const Op& op, const std::vector<Tensor>& inputs, const Tensor& dout, DType dtype, const lmf::Device& device,
        const lmf::ComputeOptions& options = lmf::ComputeOptions{}) {
  std::vector<Tensor> in;
  for (const Tensor& x : inputs) {
    Tensor t = x.to(dtype).to(device);
    t.set_requires_grad(true);
    in.push_back(t);
  }
  Run r;
  {
    const lmf::ComputeScope scope(options);
    const Tensor y = op(in);
    REQUIRE(y.device() == device);
    r.out = y.to_vector();
    r.out_dtype = y.dtype();
    y.backward(dout.to(device));
  }
  for (const Tensor& x : in) {
    REQUIRE(x.grad().defined());
    CHECK(x.grad().dtype() == DType::f32);
    r.grads.push_back(x.grad().to_vector());
  }
  return r;
}

Tensor rounded(const Tensor& x) { return x.to(DType::bf16).to(DType::f32); }

double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  REQUIRE(got.size() == ref.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

int capability_major() {
  int major = 0;
  REQUIRE(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess);
  return major;
}

// What the dispatch must choose, from the rules of docs/kernels.md (not from the code under test).
bool expect_flash(int64_t hs, int64_t tq, int64_t tk, lmf::AttentionBackend backend) {
  const char* env = std::getenv("LMF_ATTENTION");
  if (env != nullptr && *env != '\0') backend = std::string(env) == "f32" ? lmf::AttentionBackend::f32 : lmf::AttentionBackend::flash;
  return backend == lmf::AttentionBackend::flash && (hs == 64 || hs == 128) && tq == tk && capability_major() >= 8;
}

// GPU against CPU for one op, inputs (CPU f32) and head size; `dtype` is what the inputs are stored as.
void compare(const std::string& what, const Op& op, const std::vector<Tensor>& inputs, const lmf::Shape& out_shape,
             int64_t hs, int64_t tq, int64_t tk, DType dtype, lmf::AttentionBackend backend, uint64_t seed) {
  INFO(what << ", inputs " << lmf::dtype_name(dtype) << ", backend "
            << (backend == lmf::AttentionBackend::flash ? "flash" : "f32"));
  const lmf::Device gpu = lmf::parse_device("cuda:0"), cpu = lmf::Device::cpu();
  lmf::Generator gen(seed);
  const Tensor dout = Tensor::randn(out_shape, gen);
  const bool flash = expect_flash(hs, tq, tk, backend);
  CHECK(lmf::cuda::flash_attention_usable(gpu, backend, hs, tq, tk) == flash);
  INFO("path " << (flash ? "flash" : "f32"));

  lmf::ComputeOptions options;
  options.attention_backend = backend;
  const Run got = run(op, inputs, dout, dtype, gpu, options);
  const Run ref = run(op, inputs, dout, dtype, cpu);
  std::vector<Tensor> inputs_r;
  for (const Tensor& x : inputs) inputs_r.push_back(rounded(x));
  const Run ref_r = run(op, inputs_r, rounded(dout), DType::f32, cpu);

  CHECK(got.out_dtype == ref.out_dtype);
  CHECK(got.out_dtype == dtype);
  const auto bound = [&](double pert) {
    if (flash) return 4 * pert + 3 * kU;
    return pert / 4 + 1e-5 + (got.out_dtype == DType::bf16 ? kU : 0.0);
  };
  {
    const double pert = rel_l2(ref_r.out, ref.out), err = rel_l2(got.out, ref.out);
    INFO("output: rel " << err << ", pert " << pert << ", bound " << bound(pert));
    CHECK(err <= bound(pert));
    if (dtype == DType::f32 && flash) CHECK(err > 1e-5);         // bf16 operands: the flash kernel ran
    if (dtype == DType::f32 && !flash) CHECK(err < pert / 4);  // f32 math: the f32 kernel ran
  }
  REQUIRE(got.grads.size() == inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (lmf::test::max_abs(ref.grads[i]) < kZeroGrad) {  // exactly zero but for f32 cancellation
      INFO("gradient of input " << i << " is zero: largest GPU element " << lmf::test::max_abs(got.grads[i]));
      CHECK(lmf::test::max_abs(got.grads[i]) <= kZeroGrad);
      CHECK(std::all_of(got.grads[i].begin(), got.grads[i].end(), [](float x) { return std::isfinite(x); }));
      continue;
    }
    const double pert = rel_l2(ref_r.grads[i], ref.grads[i]), err = rel_l2(got.grads[i], ref.grads[i]);
    INFO("gradient of input " << i << ": rel " << err << ", pert " << pert << ", bound " << bound(pert));
    CHECK(err <= bound(pert));
  }
}

void check_attention(int64_t b, int64_t nh, int64_t nkv, int64_t t, int64_t hs, DType dtype,
                     lmf::AttentionBackend backend, uint64_t seed) {
  lmf::Generator gen(seed);
  const Tensor q = Tensor::randn({b, nh, t, hs}, gen), k = Tensor::randn({b, nkv, t, hs}, gen),
               v = Tensor::randn({b, nkv, t, hs}, gen);
  const std::string what = "attention B " + std::to_string(b) + " NH " + std::to_string(nh) + " NKV " +
                           std::to_string(nkv) + " T " + std::to_string(t) + " HS " + std::to_string(hs);
  compare(what, [](const auto& in) { return lmf::attention(in[0], in[1], in[2]); }, {q, k, v}, {b, nh, t, hs}, hs, t,
          t, dtype, backend, seed + 1);
}

void check_causal(int64_t b, int64_t t, int64_t nh, int64_t hs, DType dtype, lmf::AttentionBackend backend,
                  uint64_t seed) {
  lmf::Generator gen(seed);
  const Tensor qkv = Tensor::randn({b, t, 3 * nh * hs}, gen);
  const std::string what = "causal_self_attention B " + std::to_string(b) + " T " + std::to_string(t) + " NH " +
                           std::to_string(nh) + " HS " + std::to_string(hs);
  compare(what, [nh](const auto& in) { return lmf::causal_self_attention(in[0], nh); }, {qkv}, {b, t, nh * hs}, hs,
          t, t, dtype, backend, seed + 1);
}

constexpr auto kFlash = lmf::AttentionBackend::flash;
constexpr auto kF32 = lmf::AttentionBackend::f32;

}  // namespace

TEST_CASE("attention on CUDA matches the CPU op: GPT heads, flash path", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  for (const DType dtype : {DType::f32, DType::bf16}) {
    check_attention(2, 4, 4, 77, 64, dtype, kFlash, 101);
    check_attention(1, 2, 2, 200, 128, dtype, kFlash, 111);
    check_attention(3, 2, 2, 1, 64, dtype, kFlash, 121);
  }
}

TEST_CASE("attention on CUDA matches the CPU op: grouped-query heads, flash path", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  for (const DType dtype : {DType::f32, DType::bf16}) {
    check_attention(2, 8, 2, 200, 64, dtype, kFlash, 201);
    check_attention(1, 8, 2, 77, 128, dtype, kFlash, 211);
    check_attention(2, 8, 2, 1, 128, dtype, kFlash, 221);
  }
}

TEST_CASE("attention on CUDA matches the CPU op on the f32 fallback, grouped heads included", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  for (const DType dtype : {DType::f32, DType::bf16}) {
    check_attention(2, 8, 2, 77, 32, dtype, kFlash, 301);  // HS 32: no flash kernel
    check_attention(2, 4, 4, 200, 32, dtype, kFlash, 311);
    check_attention(2, 8, 2, 200, 64, dtype, kF32, 321);   // chosen per call
    check_attention(1, 8, 2, 1, 128, dtype, kF32, 331);
  }
}

TEST_CASE("causal_self_attention on CUDA matches the CPU op on both paths", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  for (const DType dtype : {DType::f32, DType::bf16}) {
    check_causal(2, 77, 4, 64, dtype, kFlash, 401);
    check_causal(1, 200, 2, 128, dtype, kFlash, 411);
    check_causal(3, 1, 2, 64, dtype, kFlash, 421);
    check_causal(2, 77, 4, 32, dtype, kFlash, 431);  // HS 32: f32 fallback
    check_causal(2, 200, 2, 64, dtype, kF32, 441);
  }
}

TEST_CASE("attention on CUDA behind a KV cache: forward on the f32 kernel, backward refused", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  const lmf::Device gpu = lmf::parse_device("cuda:0");
  lmf::Generator gen(501);
  const Tensor q = Tensor::randn({1, 8, 5, 64}, gen), k = Tensor::randn({1, 2, 40, 64}, gen),
               v = Tensor::randn({1, 2, 40, 64}, gen);
  const std::vector<float> ref = lmf::attention(q, k, v).to_vector();
  const std::vector<float> ref_r = lmf::attention(rounded(q), rounded(k), rounded(v)).to_vector();
  Tensor qg = q.to(gpu), kg = k.to(gpu), vg = v.to(gpu);
  qg.set_requires_grad(true);
  const Tensor out = lmf::attention(qg, kg, vg);
  CHECK(rel_l2(out.to_vector(), ref) <= rel_l2(ref_r, ref) / 4 + 1e-5);
  CHECK_THROWS_WITH(out.backward(Tensor::ones(out.shape(), DType::f32, gpu)),
                    Catch::Contains("queries behind a KV cache"));
}
