// The fused residual + norm kernels (kernels/layernorm.cu add_layernorm_forward,
// layernorm_backward_typed; kernels/rmsnorm.cu likewise) against the CPU kernels, f32 and bf16 on
// every side, at sizes that hit every edge: C not a multiple of 32 (a lane with fewer elements) nor
// of 128, rows not a multiple of the 8 rows of a block, more than one 256-row chunk of the weight
// gradient. Then the ops (add_layer_norm, add_rms_norm, layer_norm, rms_norm) on the GPU against
// the same ops on the CPU, values and gradients.
//
// Tolerances. f32 results differ from the CPU only in summation order (warp trees in f32 against the
// CPU's double accumulation): they must sit within a quarter of the bf16 error budget of the same
// computation (cuda_test_util.h bf16_error), as every f32 kernel test. A bf16 output o of a value v
// is bf16(v') where v' is the GPU's f32 value: |o - v| <= |o - v'| + |v' - v| <= 2^-8 |v'| + e_f32,
// since round-to-nearest to 8 significant bits moves a value by at most half an ulp, 2^-8 of its
// magnitude (2^-8 |v'| <= 2^-8 (|v| + e_f32)). A bf16 sum x + y is rounded from an f32 sum that is
// exact and order-free, so it must equal the CPU's rounding bit for bit.
#include <functional>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "cuda/cuda_test_util.h"
#include "lmforge/core/compute.h"
#include "lmforge/ops.h"

namespace k = lmf::kernels;
using lmf::DType;
using lmf::Tensor;
using lmf::test::bf16_error;
using lmf::test::DeviceBuffer;
using lmf::test::max_abs_diff;
using lmf::test::random_vector;
using lmf::test::round_bf16;

namespace {

constexpr double kF32Share = 0.25;
constexpr double kHalfUlp = 1.0 / 256;  // 2^-8: bf16 round-to-nearest, relative

// A device array holding v as f32 or as bf16 bits.
struct TypedBuffer {
  TypedBuffer(const std::vector<float>& v, bool bf16) : bf16_(bf16), f32_(bf16 ? 1 : v.size()), b16_(bf16 ? v.size() : 1) {
    if (bf16) {
      std::vector<uint16_t> bits(v.size());
      for (std::size_t i = 0; i < v.size(); ++i) bits[i] = lmf::bf16(v[i]).bits;
      b16_.upload(bits);
    } else {
      f32_.upload(v);
    }
  }
  explicit TypedBuffer(std::size_t n, bool bf16) : bf16_(bf16), f32_(bf16 ? 1 : n), b16_(bf16 ? n : 1) {}
  void* get() const { return bf16_ ? static_cast<void*>(b16_.get()) : static_cast<void*>(f32_.get()); }
  k::ElemType type() const { return bf16_ ? k::ElemType::bf16 : k::ElemType::f32; }
  std::vector<float> download() const {
    if (!bf16_) return f32_.download();
    const std::vector<uint16_t> bits = b16_.download();
    std::vector<float> v(bits.size());
    for (std::size_t i = 0; i < bits.size(); ++i) {
      lmf::bf16 b;
      b.bits = bits[i];
      v[i] = static_cast<float>(b);
    }
    return v;
  }
  bool bf16_;
  DeviceBuffer<float> f32_;
  DeviceBuffer<uint16_t> b16_;
};

// Every |got - want| within 2^-8 |want| + slack (a bf16 rounding of a value slack away from want).
void check_bf16_close(const std::vector<float>& got, const std::vector<float>& want, double slack) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double bound = kHalfUlp * (std::fabs(double(want[i])) + slack) + slack;
    if (!(std::fabs(double(got[i]) - double(want[i])) <= bound)) ++bad;
  }
  CHECK(bad == 0);
}

struct Case {
  bool x16, y16, sum16, out16;
};

// The layouts mixed precision produces: all f32; f32 residual + bf16 branch (f32 sum, bf16 out);
// two bf16 inputs (bf16 sum and out).
const Case kCases[] = {{false, false, false, false}, {false, true, false, true}, {true, true, true, true},
                       {true, false, false, false}};

void check_add_norm(bool rms, int64_t n, int64_t c, uint64_t seed) {
  const auto x0 = random_vector(n * c, seed, 2.f), y0 = random_vector(n * c, seed + 1);
  const auto w = random_vector(c, seed + 2), b = random_vector(c, seed + 3);
  const auto g = random_vector(n * c, seed + 4), dres = random_vector(n * c, seed + 5);
  for (const Case& cs : kCases) {
    INFO((rms ? "rms" : "layer") << " norm n=" << n << " c=" << c << " x16=" << cs.x16 << " y16=" << cs.y16
                                 << " sum16=" << cs.sum16 << " out16=" << cs.out16);
    const auto x = cs.x16 ? round_bf16(x0) : x0, y = cs.y16 ? round_bf16(y0) : y0;
    // The reference: the CPU's add then norm on the values the GPU sees, sum rounded like a bf16 add.
    std::vector<float> sum(n * c);
    for (int64_t i = 0; i < n * c; ++i) sum[i] = x[i] + y[i];
    if (cs.sum16) sum = round_bf16(sum);
    auto cpu = [&](const std::vector<float>& s, const std::vector<float>& ws, const std::vector<float>& gs) {
      std::vector<float> out(n * c), mean(n), rstd(n), dx(n * c), dw(c), db(c);
      if (rms) {
        lmf::cpu::rms_norm_forward(out.data(), rstd.data(), s.data(), ws.data(), n, c, 1e-5f);
        lmf::cpu::rms_norm_backward(dx.data(), dw.data(), gs.data(), s.data(), ws.data(), rstd.data(), n, c);
      } else {
        lmf::cpu::layer_norm_forward(out.data(), mean.data(), rstd.data(), s.data(), ws.data(), b.data(), n, c, 1e-5f);
        lmf::cpu::layer_norm_backward(dx.data(), dw.data(), db.data(), gs.data(), s.data(), ws.data(), mean.data(),
                                      rstd.data(), n, c);
      }
      return std::vector<std::vector<float>>{out, dx, dw, db};
    };
    const auto ref = cpu(sum, w, g), ref16 = cpu(round_bf16(sum), round_bf16(w), round_bf16(g));
    const double out_err = kF32Share * bf16_error(ref[0], ref16[0]);

    TypedBuffer xd(x, cs.x16), yd(y, cs.y16), sumd(n * c, cs.sum16), outd(n * c, cs.out16);
    DeviceBuffer<float> wd(w), bd(b), gd(g), resd(dres), mean(n), rstd(n), dx(n * c), dw(c), db(c);
    if (rms) {
      k::add_rmsnorm_forward(sumd.get(), sumd.type(), outd.get(), outd.type(), rstd.get(), xd.get(), xd.type(),
                             yd.get(), yd.type(), wd.get(), n, c, 1e-5f, nullptr);
    } else {
      k::add_layernorm_forward(sumd.get(), sumd.type(), outd.get(), outd.type(), mean.get(), rstd.get(), xd.get(),
                               xd.type(), yd.get(), yd.type(), wd.get(), bd.get(), n, c, 1e-5f, nullptr);
    }
    const std::vector<float> sum_gpu = sumd.download();
    CHECK(max_abs_diff(sum_gpu, sum) == 0);
    if (cs.out16) {
      check_bf16_close(outd.download(), ref[0], out_err);
    } else {
      CHECK(max_abs_diff(outd.download(), ref[0]) <= out_err);
    }
    // Backward from the saved sum in its own dtype, plus the residual's own gradient.
    if (rms) {
      DeviceBuffer<float> work(k::rmsnorm_backward_workspace(n, c));
      k::rmsnorm_backward_typed(dx.get(), dw.get(), gd.get(), sumd.get(), sumd.type(), wd.get(), rstd.get(),
                                resd.get(), n, c, work.get(), nullptr);
    } else {
      DeviceBuffer<float> work(k::layernorm_backward_workspace(n, c));
      k::layernorm_backward_typed(dx.get(), dw.get(), db.get(), gd.get(), sumd.get(), sumd.type(), wd.get(),
                                  mean.get(), rstd.get(), resd.get(), n, c, work.get(), nullptr);
    }
    std::vector<float> want_dx = ref[1];
    for (int64_t i = 0; i < n * c; ++i) want_dx[i] += dres[i];
    CHECK(max_abs_diff(dx.download(), want_dx) <= kF32Share * bf16_error(ref[1], ref16[1]));
    CHECK(max_abs_diff(dw.download(), ref[2]) <= kF32Share * bf16_error(ref[2], ref16[2]));
    if (!rms) CHECK(max_abs_diff(db.download(), ref[3]) <= kF32Share * bf16_error(ref[3], ref16[3]));
  }
}

lmf::Device gpu() { return lmf::parse_device("cuda:0"); }

Tensor randn(const lmf::Shape& shape, uint64_t seed) {
  lmf::Generator gen(seed);
  return Tensor::randn(shape, gen);
}

// The op on the GPU against the op on the CPU: outputs (in the same dtypes) and every gradient.
void check_op_against_cpu(const std::vector<Tensor>& inputs, const std::vector<DType>& dtypes, bool mixed,
                          const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& op) {
  std::vector<Tensor> on_cpu, on_gpu;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor t = inputs[i].to(dtypes[i]);
    on_cpu.push_back(t.clone().set_requires_grad(true));
    on_gpu.push_back(t.to(gpu()).set_requires_grad(true));
  }
  lmf::ComputeOptions options;
  options.mixed_bf16 = mixed;
  std::vector<Tensor> out_cpu, out_gpu;
  {
    const lmf::ComputeScope scope(options);
    out_cpu = op(on_cpu);
    out_gpu = op(on_gpu);
  }
  REQUIRE(out_cpu.size() == out_gpu.size());
  Tensor loss_cpu, loss_gpu;
  for (std::size_t j = 0; j < out_cpu.size(); ++j) {
    INFO("output " << j);
    REQUIRE(out_gpu[j].dtype() == out_cpu[j].dtype());
    REQUIRE(out_gpu[j].device().is_cuda());
    const std::vector<float> want = out_cpu[j].to(DType::f32).to_vector();
    const std::vector<float> got = out_gpu[j].to(DType::f32).to_vector();
    // Outputs of magnitude ~3 (normalised, times N(0,1) weights): the f32 difference of a norm
    // is a few ulps of that, well under 1e-5; a bf16 output adds its half-ulp rounding.
    if (out_cpu[j].dtype() == DType::bf16) {
      check_bf16_close(got, want, 1e-5);
    } else {
      CHECK(max_abs_diff(got, want) <= 1e-5);
    }
    const Tensor gw = randn(out_cpu[j].shape(), 90 + j);
    const Tensor lc = lmf::sum(lmf::mul(out_cpu[j].to(DType::f32), gw));
    const Tensor lg = lmf::sum(lmf::mul(out_gpu[j].to(DType::f32), gw.to(gpu())));
    loss_cpu = loss_cpu.defined() ? lmf::add(loss_cpu, lc) : lc;
    loss_gpu = loss_gpu.defined() ? lmf::add(loss_gpu, lg) : lg;
  }
  loss_cpu.backward();
  loss_gpu.backward();
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    INFO("gradient of input " << i);
    REQUIRE(on_gpu[i].grad().defined());
    const std::vector<float> want = on_cpu[i].grad().to_vector(), got = on_gpu[i].grad().to_vector();
    // A gradient element is a sum of at most 90 (C, for dx) or 21 (rows, for dw, db) f32 terms
    // of O(1-10) magnitude, summed in another order on each side: 90 terms * 2^-24 * 10 ≈ 5e-5
    // of the largest gradient bounds the difference.
    CHECK(max_abs_diff(got, want) <= 5e-5 * std::max(1.0, lmf::test::max_abs(want)));
  }
}

}  // namespace

TEST_CASE("fused add + layer norm kernels match the CPU, f32 and bf16, ragged sizes", "[cuda][layernorm][fused]") {
  LMF_SKIP_WITHOUT_GPU();
  check_add_norm(false, 37, 100, 11);   // rows not a multiple of 8, C not a multiple of 32
  check_add_norm(false, 301, 1000, 21);  // two weight-gradient chunks, C not a multiple of 128
  check_add_norm(false, 5, 768, 31);
}

TEST_CASE("fused add + RMS norm kernels match the CPU, f32 and bf16, ragged sizes", "[cuda][rms_norm][fused]") {
  LMF_SKIP_WITHOUT_GPU();
  check_add_norm(true, 37, 100, 41);
  check_add_norm(true, 301, 1000, 51);
  check_add_norm(true, 3, 576, 61);
}

TEST_CASE("add_layer_norm and add_rms_norm on the GPU equal the CPU ops, values and gradients", "[cuda][fused]") {
  LMF_SKIP_WITHOUT_GPU();
  const Tensor x = randn({3, 7, 90}, 1), y = randn({3, 7, 90}, 2), w = randn({90}, 3), b = randn({90}, 4);
  const auto ln = [](const std::vector<Tensor>& in) {
    const auto [s, o] = lmf::add_layer_norm(in[0], in[1], in[2], in[3]);
    return std::vector<Tensor>{s, o};
  };
  const auto rms = [](const std::vector<Tensor>& in) {
    const auto [s, o] = lmf::add_rms_norm(in[0], in[1], in[2]);
    return std::vector<Tensor>{s, o};
  };
  for (const bool mixed : {false, true}) {
    INFO("mixed_bf16 " << mixed);
    check_op_against_cpu({x, y, w, b}, {DType::f32, DType::f32, DType::f32, DType::f32}, mixed, ln);
    check_op_against_cpu({x, y, w, b}, {DType::f32, DType::bf16, DType::f32, DType::f32}, mixed, ln);
    check_op_against_cpu({x, y, w, b}, {DType::bf16, DType::bf16, DType::f32, DType::f32}, mixed, ln);
    check_op_against_cpu({x, y, w}, {DType::f32, DType::f32, DType::f32}, mixed, rms);
    check_op_against_cpu({x, y, w}, {DType::f32, DType::bf16, DType::f32}, mixed, rms);
    check_op_against_cpu({x, y, w}, {DType::bf16, DType::bf16, DType::f32}, mixed, rms);
    check_op_against_cpu({x, w, b}, {DType::bf16, DType::f32, DType::f32}, mixed,
                         [](const auto& in) { return std::vector<Tensor>{lmf::layer_norm(in[0], in[1], in[2])}; });
    check_op_against_cpu({x, w}, {DType::bf16, DType::f32}, mixed,
                         [](const auto& in) { return std::vector<Tensor>{lmf::rms_norm(in[0], in[1])}; });
  }
}

TEST_CASE("add_layer_norm and add_rms_norm on the GPU give the bits of add then the norm on the GPU", "[cuda][fused]") {
  LMF_SKIP_WITHOUT_GPU();
  const Tensor x = randn({4, 5, 70}, 5).to(gpu()), y = randn({4, 5, 70}, 6).to(gpu());
  const Tensor w = randn({70}, 7).to(gpu()), b = randn({70}, 8).to(gpu());
  for (const auto& [xt, yt] : {std::pair{DType::f32, DType::f32}, std::pair{DType::f32, DType::bf16},
                               std::pair{DType::bf16, DType::bf16}}) {
    INFO("x " << int(xt) << " y " << int(yt));
    const Tensor xs = x.to(xt), ys = y.to(yt);
    const auto [s1, n1] = lmf::add_layer_norm(xs, ys, w, b);
    const Tensor s2 = lmf::add(xs, ys);
    const Tensor n2 = lmf::layer_norm(s2, w, b);
    CHECK(s1.dtype() == s2.dtype());
    CHECK(s1.to(DType::f32).to_vector() == s2.to(DType::f32).to_vector());
    CHECK(n1.to(DType::f32).to_vector() == n2.to(DType::f32).to_vector());
    const auto [r1, m1] = lmf::add_rms_norm(xs, ys, w);
    const Tensor m2 = lmf::rms_norm(lmf::add(xs, ys), w);
    CHECK(r1.to(DType::f32).to_vector() == s2.to(DType::f32).to_vector());
    CHECK(m1.to(DType::f32).to_vector() == m2.to(DType::f32).to_vector());
  }
  // f32 gradients: the same kernels on the same values, so the same bits.
  std::vector<Tensor> in1, in2;
  for (const Tensor& t : {x, y, w, b}) {
    in1.push_back(t.clone().set_requires_grad(true));
    in2.push_back(t.clone().set_requires_grad(true));
  }
  const Tensor g = randn({4, 5, 70}, 9).to(gpu());
  const auto [s1, n1] = lmf::add_layer_norm(in1[0], in1[1], in1[2], in1[3]);
  lmf::add(lmf::sum(lmf::mul(n1, g)), lmf::sum(lmf::mul(s1, s1))).backward();
  const Tensor s2 = lmf::add(in2[0], in2[1]);
  const Tensor n2 = lmf::layer_norm(s2, in2[2], in2[3]);
  lmf::add(lmf::sum(lmf::mul(n2, g)), lmf::sum(lmf::mul(s2, s2))).backward();
  for (std::size_t i = 0; i < in1.size(); ++i) {
    INFO("input " << i);
    CHECK(in1[i].grad().to_vector() == in2[i].grad().to_vector());
  }
}
