// Tests of the unary table ops (src/ops/unary.cpp, kernels/common/op_table.h): values against
// <cmath> in double, gradients by finite differences on each op's domain, neg, and relu's kink.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>

#include "backend/cpu/cpu_kernels.h"
#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  bool positive_domain;
};

const std::vector<UnaryCase> kCases = {
    {"neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, false},
    {"exp", [](const Tensor& x) { return lmf::exp(x); }, [](double x) { return std::exp(x); }, false},
    {"log", [](const Tensor& x) { return lmf::log(x); }, [](double x) { return std::log(x); }, true},
    {"sqrt", [](const Tensor& x) { return lmf::sqrt(x); }, [](double x) { return std::sqrt(x); }, true},
    {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, true},
    {"tanh", [](const Tensor& x) { return lmf::tanh(x); }, [](double x) { return std::tanh(x); }, false},
    {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double x) { return 1 / (1 + std::exp(-x)); }, false},
    {"silu", [](const Tensor& x) { return silu(x); }, [](double x) { return x / (1 + std::exp(-x)); }, false},
    {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; }, false},
    {"pow 3", [](const Tensor& x) { return lmf::pow(x, 3.f); }, [](double x) { return x * x * x; }, false},
    {"pow -1.5", [](const Tensor& x) { return lmf::pow(x, -1.5f); }, [](double x) { return std::pow(x, -1.5); }, true},
    {"pow 0", [](const Tensor& x) { return lmf::pow(x, 0.f); }, [](double) { return 1.0; }, false},
};

// Inputs on the op's domain, at least 0.05 from relu's kink at 0 (finite differences use eps 1e-2).
Tensor input_for(const UnaryCase& c, uint64_t seed) {
  std::vector<float> v = random_tensor({3, 7}, seed, false).to_vector();
  for (float& x : v) {
    if (c.positive_domain) x = 0.5f + std::fabs(x);
    else if (std::fabs(x) < 0.05f) x += x < 0 ? -0.05f : 0.05f;
  }
  Tensor t = Tensor::from_vector(v, {3, 7});
  t.set_requires_grad(true);
  return t;
}

}  // namespace

TEST_CASE("unary ops match <cmath> in double", "[unary]") {
  for (const UnaryCase& c : kCases) {
    INFO(c.name);
    const Tensor x = input_for(c, 1);
    std::vector<double> expected = to_double(x);
    for (double& v : expected) v = c.ref(v);
    const Tensor y = c.op(x);
    CHECK(y.shape() == x.shape());
    CHECK(close_ratio(y.to_vector(), expected, 2e-6, 1e-6) <= 1);
  }
}

TEST_CASE("unary gradients match finite differences", "[unary][grad]") {
  for (const UnaryCase& c : kCases) {
    INFO(c.name);
    const auto r = gradcheck([&c](const std::vector<Tensor>& in) { return c.op(in[0]); }, {input_for(c, 2)});
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("unary ops take strided inputs and reject other dtypes", "[unary]") {
  const Tensor base = random_tensor({4, 3}, 3, false);
  const Tensor t = transpose(base, 0, 1);
  std::vector<double> expected = to_double(t.contiguous_copy());
  for (double& v : expected) v = std::tanh(v);
  CHECK(close_ratio(lmf::tanh(t).to_vector(), expected, 2e-6, 1e-6) <= 1);
  CHECK_THROWS_WITH(lmf::exp(Tensor::zeros({2}, DType::i32)), Catch::Contains("exp"));
}

TEST_CASE("relu's gradient at 0 is 0, as in PyTorch", "[unary][grad]") {
  Tensor x = Tensor::from_vector(std::vector<float>{-1.f, 0.f, 2.f}, {3});
  x.set_requires_grad(true);
  relu(x).backward(Tensor::ones({3}));
  CHECK(x.grad().to_vector() == std::vector<float>{0.f, 0.f, 1.f});
}

TEST_CASE("unary ops on bf16 round the f32 result once; the gradient reads x and the rounded result",
          "[unary][bf16]") {
  const std::vector<kernels::UnaryOp> kinds = {
      kernels::UnaryOp::neg,  kernels::UnaryOp::exp,     kernels::UnaryOp::log,  kernels::UnaryOp::sqrt,
      kernels::UnaryOp::rsqrt, kernels::UnaryOp::tanh,   kernels::UnaryOp::sigmoid, kernels::UnaryOp::silu,
      kernels::UnaryOp::relu, kernels::UnaryOp::pow,     kernels::UnaryOp::pow,  kernels::UnaryOp::pow};
  const std::vector<float> exponents = {0, 0, 0, 0, 0, 0, 0, 0, 0, 3.f, -1.5f, 0.f};
  REQUIRE(kinds.size() == kCases.size());
  for (std::size_t k = 0; k < kCases.size(); ++k) {
    const UnaryCase& c = kCases[k];
    INFO(c.name);
    Tensor x16 = input_for(c, 4).detach().to(DType::bf16);
    x16.set_requires_grad(true);
    const Tensor xr = x16.detach().to(DType::f32);  // the rounded values, exactly
    const Tensor y16 = c.op(x16);
    REQUIRE(y16.dtype() == DType::bf16);
    // The value: the f32 op on the rounded input, rounded once.
    CHECK(y16.to_vector() == c.op(xr).to(DType::bf16).to_vector());
    // The gradient: the table's derivative at the rounded x and the stored (rounded) y, in f32.
    const Tensor g = random_tensor({3, 7}, 5, false);
    y16.backward(g);
    REQUIRE(x16.grad().dtype() == DType::f32);
    const Tensor yr = y16.detach().to(DType::f32);
    std::vector<float> want(static_cast<std::size_t>(xr.numel()));
    cpu::unary_backward(kinds[k], want.data(), g.data<float>(), xr.data<float>(), yr.data<float>(), exponents[k],
                        xr.numel());
    CHECK(x16.grad().to_vector() == want);
  }
}
