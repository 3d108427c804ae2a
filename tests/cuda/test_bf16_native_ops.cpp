// The ops whose CUDA kernels read and write bf16 storage in place (GELU, SwiGLU, rotary embedding,
// dropout, cross-entropy's logits, the periodic and broadcasting add/sub/mul/div, the unary ops), on bf16 inputs on
// the GPU against the same ops on the same bf16 inputs on the CPU (whose f32-only kernels widen them),
// values and gradients; and that the GPU's bf16 path widens nothing: it reaches the allocator no more
// often than the same op on f32 inputs, where a widened copy would be one extra live block.
//
// Tolerances. Both devices compute the same f32 formula on the same (exactly widened) bf16 values and
// differ only in the last f32 bits (the device's expf/tanhf against the host's, summation order in
// the reductions): a few f32 ulps, 2^-21 of the magnitude or so. Rounded to bf16, two such values land
// on the same bf16 number or on neighbours, so a bf16 output may differ by one bf16 ulp of its
// magnitude (2^-7 relative: 8 significant bits). f32 outputs and the f32 gradients are held to the
// same one-bf16-ulp bound, far above their f32 differences, so a kernel that read a bf16 operand with
// the wrong type or offset (errors of order the value itself) still fails. Elements that cancel to
// near zero (a rotation x1 c - x2 s, silu's derivative at its zero) keep an f32-sized absolute error of
// the inputs' scale, so the bound is floored at one bf16 ulp of 2^-12 of the array's largest magnitude.
// Ops made of one IEEE operation per element before the rounding (dropout, add/sub/mul/div
// forwards) must match the CPU bit for bit.
#include <cmath>
#include <functional>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "cuda/cuda_test_util.h"
#include "lmforge/core/allocator.h"
#include "lmforge/core/compute.h"
#include "lmforge/core/rng.h"
#include "lmforge/ops.h"

using lmf::Device;
using lmf::DType;
using lmf::Tensor;

namespace {

using Inputs = std::vector<Tensor>;
using Op = std::function<Tensor(const Inputs&)>;

Tensor randn(const lmf::Shape& shape, uint64_t seed, float scale = 1.f) {
  lmf::Generator gen(seed);
  return Tensor::randn(shape, gen, 0.f, scale);
}

// One bf16 ulp of |v|: 2^(e - 7) for |v| in [2^e, 2^(e+1)).
double bf16_ulp(double v) {
  const double m = std::fabs(v);
  if (m == 0 || !std::isfinite(m)) return 0;
  return std::ldexp(1.0, std::ilogb(m) - 7);
}

// Every |got - want| within one bf16 ulp of max(|got|, |want|), floored at one bf16 ulp of 2^-12 of
// the largest |want| (the cancellation floor above).
void check_within_bf16_ulp(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  const double floor = bf16_ulp(std::ldexp(lmf::test::max_abs(want), -12));
  std::size_t bad = 0, first = got.size();
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double bound = std::max(bf16_ulp(std::max(std::fabs(double(got[i])), std::fabs(double(want[i])))), floor);
    if (!(std::fabs(double(got[i]) - double(want[i])) <= bound)) {
      if (bad++ == 0) first = i;
    }
  }
  INFO("first bad element " << first << ": got " << (bad ? got[first] : 0.f) << ", want " << (bad ? want[first] : 0.f));
  CHECK(bad == 0);
}

// Allocations that reach the system allocator while fn runs, from an empty cache: every block the
// op holds at once is a fresh one, so a widened copy alive beside the output adds one.
std::size_t system_allocs_during(const Device& dev, const std::function<void()>& fn) {
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  lmf::empty_cache(dev);
  const std::size_t before = lmf::allocator_stats(dev).system_allocs;
  fn();
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  return lmf::allocator_stats(dev).system_allocs - before;
}

// No widening: the op on these dtypes holds no more blocks than on all-f32 inputs, forward and
// backward (a widened bf16 operand would be one more block, alive during the kernel). g: the
// upstream gradient (host, f32).
void check_no_widening(const std::vector<Tensor>& host_inputs, const std::vector<DType>& dtypes, const Op& op,
                       const Tensor& g) {
  const Device gpu = Device::cuda(0);
  auto allocs = [&](bool all_f32, bool backward) {
    Inputs in;
    for (std::size_t i = 0; i < host_inputs.size(); ++i)
      in.push_back(host_inputs[i].to(all_f32 ? DType::f32 : dtypes[i]).to(gpu).set_requires_grad(true));
    const Tensor gg = g.to(gpu);
    Tensor out;
    if (!backward) return system_allocs_during(gpu, [&] { out = op(in); });
    out = op(in);
    return system_allocs_during(gpu, [&] { out.backward(gg); });
  };
  const std::size_t fwd_typed = allocs(false, false), fwd_f32 = allocs(true, false);
  const std::size_t bwd_typed = allocs(false, true), bwd_f32 = allocs(true, true);
  INFO("forward allocations " << fwd_typed << " (all-f32 inputs: " << fwd_f32 << "), backward " << bwd_typed
                              << " (" << bwd_f32 << ")");
  CHECK(fwd_typed <= fwd_f32);
  CHECK(bwd_typed <= bwd_f32);
}

struct Options {
  bool exact_forward = false;  // one IEEE operation per element before the rounding
  bool check_allocs = true;
};

// host_inputs (f32, CPU) are given to the op as `dtypes` on both devices (bf16 rounded once, on the
// host, so both devices see the same bits); requires_grad on each.
void compare(const char* name, const std::vector<Tensor>& host_inputs, const std::vector<DType>& dtypes, const Op& op,
             DType want_dtype, Options opt = {}) {
  INFO(name);
  const Device gpu = Device::cuda(0);
  Inputs cpu_in, gpu_in;
  for (std::size_t i = 0; i < host_inputs.size(); ++i) {
    const Tensor x = host_inputs[i].to(dtypes[i]);
    cpu_in.push_back(x.clone().set_requires_grad(true));
    gpu_in.push_back(x.to(gpu).set_requires_grad(true));
  }
  const Tensor want = op(cpu_in);
  const Tensor got = op(gpu_in);
  REQUIRE(want.dtype() == want_dtype);
  REQUIRE(got.dtype() == want_dtype);
  REQUIRE(got.device().is_cuda());
  REQUIRE(got.shape() == want.shape());
  if (opt.exact_forward) {
    CHECK(got.to_vector() == want.to_vector());
  } else {
    check_within_bf16_ulp(got.to_vector(), want.to_vector(), "forward");
  }

  const Tensor g = randn(want.shape(), 9001);
  want.backward(g);
  got.backward(g.to(gpu));
  for (std::size_t i = 0; i < host_inputs.size(); ++i) {
    INFO("gradient of input " << i);
    REQUIRE(cpu_in[i].grad().defined());
    REQUIRE(gpu_in[i].grad().defined());
    CHECK(gpu_in[i].grad().dtype() == DType::f32);
    check_within_bf16_ulp(gpu_in[i].grad().to_vector(), cpu_in[i].grad().to_vector(), "gradient");
  }

  if (opt.check_allocs) check_no_widening(host_inputs, dtypes, op, g);
}

}  // namespace

TEST_CASE("GELU reads and writes bf16 in place and matches the CPU", "[cuda][bf16][gelu]") {
  LMF_SKIP_WITHOUT_GPU();
  compare("gelu", {randn({3, 5, 67}, 1, 2.f)}, {DType::bf16}, [](const Inputs& in) { return lmf::gelu(in[0]); },
          DType::bf16);
}

TEST_CASE("SwiGLU reads bf16 gate and up in place and matches the CPU", "[cuda][bf16][swiglu]") {
  LMF_SKIP_WITHOUT_GPU();
  const Op op = [](const Inputs& in) { return lmf::swiglu(in[0], in[1]); };
  compare("swiglu bf16 gate, bf16 up", {randn({4, 33, 29}, 2, 3.f), randn({4, 33, 29}, 3)}, {DType::bf16, DType::bf16},
          op, DType::bf16);
  compare("swiglu f32 gate, bf16 up", {randn({7, 41}, 4, 3.f), randn({7, 41}, 5)}, {DType::f32, DType::bf16}, op,
          DType::bf16);
}

TEST_CASE("rotary embedding reads a strided bf16 projection in place and matches the CPU", "[cuda][bf16][rotary]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t b = 2, t = 9, nh = 3, hs = 16, positions = 16, offset = 4;
  std::vector<float> cos_v, sin_v;
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t d = 0; d < hs / 2; ++d) {
      const double angle = double(p) * std::pow(10000.0, -2.0 * double(d) / double(hs));
      cos_v.push_back(static_cast<float>(std::cos(angle)));
      sin_v.push_back(static_cast<float>(std::sin(angle)));
    }
  const Tensor cos_h = Tensor::from_vector(cos_v, {positions, hs / 2}), sin_h = Tensor::from_vector(sin_v, {positions, hs / 2});
  // x is the (B, T, NH, HS) projection seen as (B, NH, T, HS) through its strides, as attention passes it.
  const Op op = [&](const Inputs& in) {
    const Device dev = in[0].device();
    return lmf::rotary_embedding(lmf::transpose(in[0], 1, 2), cos_h.to(dev), sin_h.to(dev), offset);
  };
  compare("rotary", {randn({b, t, nh, hs}, 6, 2.f)}, {DType::bf16}, op, DType::bf16);
}

TEST_CASE("dropout of bf16 is bit-identical to the CPU", "[cuda][bf16][dropout]") {
  LMF_SKIP_WITHOUT_GPU();
  const Op op = [](const Inputs& in) {
    lmf::Generator gen(1234);
    return lmf::dropout(in[0], 0.3f, true, gen);
  };
  Options opt;
  opt.exact_forward = true;
  compare("dropout", {randn({5, 301}, 7)}, {DType::bf16}, op, DType::bf16, opt);
}

TEST_CASE("cross-entropy reads bf16 logits in place and matches the CPU", "[cuda][bf16][cross_entropy]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t n = 37, v = 1003;
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(i % 7 == 3 ? -1 : static_cast<int32_t>((i * 131) % v));
  const Tensor targets = Tensor::from_vector(ids, {n});
  const Op op = [&](const Inputs& in) { return lmf::cross_entropy(in[0], targets.to(in[0].device()), -1); };
  compare("cross_entropy", {randn({n, v}, 8, 3.f)}, {DType::bf16}, op, DType::f32);
}

TEST_CASE("add, sub, mul and div read bf16 operands in place and match the CPU", "[cuda][bf16][elementwise]") {
  LMF_SKIP_WITHOUT_GPU();
  Options exact;
  exact.exact_forward = true;
  const DType f32 = DType::f32, b16 = DType::bf16;
  const Op add = [](const Inputs& in) { return lmf::add(in[0], in[1]); };
  const Op sub = [](const Inputs& in) { return lmf::sub(in[0], in[1]); };
  const Op mul = [](const Inputs& in) { return lmf::mul(in[0], in[1]); };
  const Op div = [](const Inputs& in) { return lmf::div(in[0], in[1]); };
  // Periodic path: same shape, a suffix (bias-like) and a scalar.
  compare("add bf16 + bf16", {randn({6, 7, 33}, 10), randn({6, 7, 33}, 11)}, {b16, b16}, add, b16, exact);
  compare("add bf16 + f32 bias", {randn({6, 7, 33}, 12), randn({33}, 13)}, {b16, f32}, add, f32, exact);
  compare("sub f32 - bf16", {randn({6, 33}, 14), randn({6, 33}, 15)}, {f32, b16}, sub, f32, exact);
  compare("mul bf16 * bf16 suffix", {randn({6, 7, 33}, 16), randn({7, 33}, 17)}, {b16, b16}, mul, b16, exact);
  compare("mul bf16 * bf16 same shape", {randn({5, 40}, 18), randn({5, 40}, 19)}, {b16, b16}, mul, b16, exact);
  compare("mul bf16 * f32 scalar", {randn({5, 40}, 20), randn({1}, 21)}, {b16, f32}, mul, f32, exact);
  // Broadcasting path: both operands broadcast, and div (always this path).
  compare("mul bf16 (B, T, 1) * bf16 (1, T, C)", {randn({3, 8, 1}, 22), randn({1, 8, 19}, 23)}, {b16, b16}, mul, b16,
          exact);
  compare("add bf16 (B, 1, C) + f32 (T, 1)", {randn({3, 1, 19}, 24), randn({8, 1}, 25)}, {b16, f32}, add, f32, exact);
  // Divisors kept away from zero: b = r² + 0.5 >= 0.5.
  const Tensor r = randn({8, 19}, 26);
  const Tensor divisor = lmf::add(lmf::mul(r, r), Tensor::full({8, 19}, 0.5f));
  compare("div bf16 / bf16", {randn({3, 8, 19}, 27), divisor.detach()}, {b16, b16}, div, b16, exact);
  compare("div bf16 / f32 column", {randn({8, 19}, 28), Tensor::full({8, 1}, 1.75f)}, {b16, f32}, div, f32, exact);
}

TEST_CASE("unary ops read and write bf16 in place and match the CPU", "[cuda][bf16][unary]") {
  LMF_SKIP_WITHOUT_GPU();
  using U = lmf::kernels::UnaryOp;
  struct Case {
    const char* name;
    U kind;
    float p;
    bool positive;
    std::function<Tensor(const Tensor&)> op;
  };
  const std::vector<Case> cases = {
      {"neg", U::neg, 0, false, [](const Tensor& x) { return lmf::neg(x); }},
      {"exp", U::exp, 0, false, [](const Tensor& x) { return lmf::exp(x); }},
      {"log", U::log, 0, true, [](const Tensor& x) { return lmf::log(x); }},
      {"sqrt", U::sqrt, 0, true, [](const Tensor& x) { return lmf::sqrt(x); }},
      {"rsqrt", U::rsqrt, 0, true, [](const Tensor& x) { return lmf::rsqrt(x); }},
      {"tanh", U::tanh, 0, false, [](const Tensor& x) { return lmf::tanh(x); }},
      {"sigmoid", U::sigmoid, 0, false, [](const Tensor& x) { return lmf::sigmoid(x); }},
      {"silu", U::silu, 0, false, [](const Tensor& x) { return lmf::silu(x); }},
      {"relu", U::relu, 0, false, [](const Tensor& x) { return lmf::relu(x); }},
      {"pow 3", U::pow, 3.f, false, [](const Tensor& x) { return lmf::pow(x, 3.f); }},
  };
  const Device gpu = Device::cuda(0);
  for (const Case& c : cases) {
    INFO(c.name);
    Tensor x = randn({9, 31}, 40);
    if (c.positive) x = lmf::add(lmf::mul(x, x), Tensor::full({1}, 0.25f)).detach();  // x >= 0.25
    const Tensor x16 = x.to(DType::bf16);
    const Tensor want = c.op(x16);  // the CPU: widened, f32, rounded once
    Tensor xg = x16.to(gpu).set_requires_grad(true);
    const Tensor got = c.op(xg);
    REQUIRE(got.dtype() == DType::bf16);
    const std::vector<float> y = got.to_vector();
    check_within_bf16_ulp(y, want.to_vector(), "forward");
    // The gradient is the table's derivative at x and the stored y; the CPU formula is given the
    // GPU's own y (rounded on the GPU, possibly one bf16 ulp from the CPU's), so only f32 math differs.
    const Tensor g = randn({9, 31}, 41);
    got.backward(g.to(gpu));
    const Tensor xr = x16.to(DType::f32), yr = Tensor::from_vector(y, {9, 31});
    std::vector<float> dx(static_cast<std::size_t>(xr.numel()));
    lmf::cpu::unary_backward(c.kind, dx.data(), g.data<float>(), xr.data<float>(), yr.data<float>(), c.p, xr.numel());
    REQUIRE(xg.grad().dtype() == DType::f32);
    check_within_bf16_ulp(xg.grad().to_vector(), dx, "gradient");
    check_no_widening({x}, {DType::bf16}, [&c](const Inputs& in) { return c.op(in[0]); }, g);
  }
}
