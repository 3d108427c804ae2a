// Ops on bf16 tensors (mixed precision, ComputeOptions::mixed_bf16): each op given bf16 inputs must
// compute what its f32 version computes on the same, bf16-rounded, values, and round only its
// output. Ops that convert at their boundary (norms, attention, gelu, swiglu, rotary, dropout,
// cross-entropy, residual adds) must match bit for bit: the same f32 kernel runs on the same values.
// Products read bf16 operands in place and may round the other operand too (bf16 products); they
// are checked against a double reference with the bound derived in product_bound().
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <vector>

#include "lmforge/core/compute.h"
#include "lmforge/core/rng.h"
#include "lmforge/nn/linear.h"
#include "lmforge/ops.h"

using lmf::ComputeOptions;
using lmf::ComputeScope;
using lmf::DType;
using lmf::Generator;
using lmf::Shape;
using lmf::Tensor;

namespace {

// The options of a `run.precision: bf16` run on this CPU.
ComputeOptions mixed_options() {
  ComputeOptions o;
  o.mixed_bf16 = true;
  o.cpu_matmul_bf16 = lmf::cpu_matmul_bf16_available();
  return o;
}

Tensor randn(const Shape& shape, uint64_t seed, float std = 1.f) {
  Generator gen(seed);
  return Tensor::randn(shape, gen, 0.f, std);
}

// x rounded to bf16 and widened back: the values a bf16 tensor holds, as f32.
Tensor rounded(const Tensor& x) { return x.to(DType::bf16).to(DType::f32); }

std::vector<float> bf16_of(const std::vector<float>& v) {
  std::vector<float> out;
  for (float f : v) out.push_back(static_cast<float>(lmf::bf16(f)));
  return out;
}

// One op under test: inputs[i] is passed as bf16 where to_bf16[i] (else as f32, e.g. weights).
struct Case {
  std::vector<Tensor> inputs;
  std::vector<bool> to_bf16;
  std::function<Tensor(const std::vector<Tensor>&)> op;
};

// Forward: the bf16 run's output is bf16 and equals bf16(f32 op on the rounded inputs), element
// for element. Backward (an f32 upstream gradient): every input's gradient is f32 and equals the
// f32 op's, bit for bit.
void check_boundary_op(const Case& c, DType expected_out = DType::bf16) {
  std::vector<Tensor> ref_in, mixed_in;
  for (std::size_t i = 0; i < c.inputs.size(); ++i) {
    const Tensor x = c.to_bf16[i] ? rounded(c.inputs[i]) : c.inputs[i];
    const bool differentiable = x.dtype() == DType::f32;  // not the targets of cross_entropy
    ref_in.push_back(x.clone().set_requires_grad(differentiable));
    mixed_in.push_back((c.to_bf16[i] ? x.to(DType::bf16) : x.clone()).set_requires_grad(differentiable));
  }
  const Tensor ref = c.op(ref_in);
  REQUIRE(ref.dtype() == DType::f32);
  Tensor out;
  {
    const ComputeScope scope(mixed_options());
    out = c.op(mixed_in);
  }
  REQUIRE(out.dtype() == expected_out);
  REQUIRE(out.shape() == ref.shape());
  const std::vector<float> want = expected_out == DType::bf16 ? bf16_of(ref.to_vector()) : ref.to_vector();
  CHECK(out.to_vector() == want);

  if (ref.numel() == 1) {
    ref.backward();
    out.backward();
  } else {
    const Tensor g = randn(ref.shape(), 99);
    ref.backward(g);
    out.backward(g);
  }
  for (std::size_t i = 0; i < c.inputs.size(); ++i) {
    INFO("input " << i);
    const Tensor gr = ref_in[i].grad(), gm = mixed_in[i].grad();
    REQUIRE(gr.defined() == gm.defined());
    if (!gr.defined()) continue;
    CHECK(gm.dtype() == DType::f32);
    CHECK(gm.to_vector() == gr.to_vector());
  }
}

}  // namespace

TEST_CASE("cast rounds to bf16 to nearest even and passes the gradient through as f32") {
  const Tensor x = Tensor::from_vector(std::vector<float>{1.f, 1.00390625f, 1.01171875f, -3.3f}, {4}).set_requires_grad(true);
  const Tensor y = lmf::cast(x, DType::bf16);
  CHECK(y.dtype() == DType::bf16);
  // 1 + 2^-8 is a tie: it rounds to the even 1; 1 + 3 * 2^-8 rounds up to 1 + 2^-6.
  CHECK(y.to_vector() == std::vector<float>{1.f, 1.f, 1.015625f, static_cast<float>(lmf::bf16(-3.3f))});
  lmf::sum(lmf::cast(y, DType::f32)).backward();
  CHECK(x.grad().dtype() == DType::f32);
  CHECK(x.grad().to_vector() == std::vector<float>(4, 1.f));
  CHECK(lmf::cast(x, DType::f32).is_same(x));
}

TEST_CASE("norms on bf16 inputs: layer_norm, rms_norm and the fused residual forms equal f32 on rounded values") {
  const Tensor x = randn({3, 5, 24}, 1), w = randn({24}, 2), b = randn({24}, 3);
  check_boundary_op({{x, w, b}, {true, false, false}, [](const auto& in) { return lmf::layer_norm(in[0], in[1], in[2]); }});
  check_boundary_op({{x, w}, {true, false}, [](const auto& in) { return lmf::rms_norm(in[0], in[1]); }});
  // The residual stream stays f32 (x), the branch is bf16 (y): the sum is f32, the norm bf16.
  const Tensor y = randn({3, 5, 24}, 4);
  check_boundary_op({{x, y, w, b}, {false, true, false, false}, [](const auto& in) {
                       return lmf::add_layer_norm(in[0], in[1], in[2], in[3]).second;
                     }});
  check_boundary_op({{x, y, w, b}, {false, true, false, false},
                     [](const auto& in) { return lmf::add_layer_norm(in[0], in[1], in[2], in[3]).first; }},
                    DType::f32);
  check_boundary_op({{x, y, w}, {false, true, false}, [](const auto& in) {
                       return lmf::add_rms_norm(in[0], in[1], in[2]).second;
                     }});
  check_boundary_op({{x, y, w}, {false, true, false},
                     [](const auto& in) { return lmf::add_rms_norm(in[0], in[1], in[2]).first; }},
                    DType::f32);
}

TEST_CASE("under mixed precision a norm of an f32 input writes bf16 (it feeds a product)") {
  const Tensor x = randn({4, 16}, 5), w = randn({16}, 6);
  const Tensor ref = lmf::layer_norm(x, w, Tensor());
  const ComputeScope scope(mixed_options());
  const Tensor out = lmf::layer_norm(x, w, Tensor());
  CHECK(out.dtype() == DType::bf16);
  CHECK(out.to_vector() == bf16_of(ref.to_vector()));
}

TEST_CASE("elementwise ops on bf16: gelu, swiglu, dropout, and add/mul promoting to f32 beside an f32 operand") {
  const Tensor a = randn({6, 20}, 7), c = randn({6, 20}, 8);
  check_boundary_op({{a}, {true}, [](const auto& in) { return lmf::gelu(in[0]); }});
  check_boundary_op({{a, c}, {true, true}, [](const auto& in) { return lmf::swiglu(in[0], in[1]); }});
  check_boundary_op({{a}, {true}, [](const auto& in) {
                       Generator gen(5);
                       return lmf::dropout(in[0], 0.25f, true, gen);
                     }});
  check_boundary_op({{a, c}, {false, true}, [](const auto& in) { return lmf::add(in[0], in[1]); }}, DType::f32);
  check_boundary_op({{a, c}, {true, false}, [](const auto& in) { return lmf::mul(in[0], in[1]); }}, DType::f32);
  check_boundary_op({{a, c}, {true, true}, [](const auto& in) { return lmf::sub(in[0], in[1]); }});
  // A broadcast operand takes the strided path, through the same casts.
  const Tensor row = randn({20}, 9);
  check_boundary_op({{a, row}, {true, false}, [](const auto& in) { return lmf::add(in[0], in[1]); }}, DType::f32);
}

TEST_CASE("attention on bf16: grouped heads, causal_self_attention from the fused projection, rotary") {
  const Tensor q = randn({2, 4, 6, 8}, 10), k = randn({2, 2, 6, 8}, 11), v = randn({2, 2, 6, 8}, 12);
  check_boundary_op({{q, k, v}, {true, true, true}, [](const auto& in) { return lmf::attention(in[0], in[1], in[2]); }});
  // Strided views (heads read in place from a (B, T, NH, HS) layout) are read the same way.
  check_boundary_op({{randn({2, 6, 4, 8}, 13)}, {true}, [&](const auto& in) {
                       const Tensor qt = lmf::transpose(in[0], 1, 2);  // (B, NH, T, HS) view
                       return lmf::attention(qt, qt, qt);
                     }});
  check_boundary_op({{randn({2, 7, 3 * 16}, 14)}, {true},
                     [](const auto& in) { return lmf::causal_self_attention(in[0], 2); }});
  const Tensor cos = randn({10, 4}, 15), sin = randn({10, 4}, 16);
  check_boundary_op({{randn({2, 3, 5, 8}, 17), cos, sin}, {true, false, false},
                     [](const auto& in) { return lmf::rotary_embedding(in[0], in[1], in[2], 2); }});
}

TEST_CASE("cross_entropy of bf16 logits is f32 and equals f32 on the rounded logits") {
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>{0, 3, -1, 9, 2, 2}, {2, 3});
  check_boundary_op({{randn({2, 3, 10}, 18, 3.f), targets}, {true, false},
                     [](const auto& in) { return lmf::cross_entropy(in[0], in[1], -1); }},
                    DType::f32);
}

namespace {

// |out - exact| <= 2^-8 |exact| + (2^-8 [bf16 products] + K 2^-24) sum_k |a_ik| |b_kj|:
//   2^-8 |exact|: rounding the result to bf16 (half an ulp of an 8-bit significand);
//   2^-8 sum |a||b|: a bf16 product rounds its f32 operand to bf16 (relative error <= 2^-8 each
//     term; bf16 operands are exact);
//   K 2^-24 sum |a||b|: any order of K f32 additions (the classic gamma_K bound).
// exact and the sums of |a||b| are computed in double from the values the op actually received.
void check_product(const std::vector<float>& got, const std::vector<double>& exact, const std::vector<double>& abs_sum,
                   int64_t k, bool out_rounded, bool bf16_products) {
  REQUIRE(got.size() == exact.size());
  const double unit = std::ldexp(1.0, -8), f32_sum = double(k) * std::ldexp(1.0, -24);
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double bound = (out_rounded ? unit * std::fabs(exact[i]) : 0.0) +
                         ((bf16_products ? unit : 0.0) + f32_sum) * abs_sum[i] + 1e-30;
    INFO("element " << i << ": " << got[i] << " vs " << exact[i] << " (bound " << bound << ")");
    REQUIRE(std::fabs(got[i] - exact[i]) <= bound);
  }
}

// c (M, N) = a (M, K) · b (K, N) in double, and sum |a||b|; a_t / b_t: stored transposed.
void reference_product(const std::vector<float>& a, const std::vector<float>& b, int64_t m, int64_t n, int64_t k,
                       bool a_t, bool b_t, std::vector<double>& c, std::vector<double>& abs_sum) {
  c.assign(static_cast<std::size_t>(m * n), 0.0);
  abs_sum.assign(c.size(), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) {
        const double x = a[a_t ? p * m + i : i * k + p], y = b[b_t ? j * k + p : p * n + j];
        c[i * n + j] += x * y;
        abs_sum[i * n + j] += std::fabs(x * y);
      }
}

}  // namespace

TEST_CASE("linear reads bf16 activations and weights in place: forward, dx and dw within the derived bound") {
  const int64_t n = 37, in = 72, out = 45;  // ragged against the kernel's 8 x 32 tiles and 16-k pairs
  const Tensor x16 = randn({n, in}, 20).to(DType::bf16).set_requires_grad(true);
  const Tensor w16 = randn({out, in}, 21, 0.2f).to(DType::bf16).set_requires_grad(true);
  const Tensor bias = randn({out}, 22).set_requires_grad(true);
  const ComputeOptions options = mixed_options();
  const ComputeScope scope(options);
  const Tensor y = lmf::linear(x16, w16, bias);
  REQUIRE(y.dtype() == DType::bf16);
  const std::vector<float> xv = x16.to_vector(), wv = w16.to_vector(), bv = bias.to_vector();
  std::vector<double> exact, abs_sum;
  reference_product(xv, wv, n, out, in, false, true, exact, abs_sum);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < out; ++j) exact[i * out + j] += bv[j];
  // The operands are bf16 already: nothing of theirs is rounded, only the output.
  check_product(y.to_vector(), exact, abs_sum, in, true, false);

  const Tensor g = randn({n, out}, 23);
  y.backward(g);
  REQUIRE(x16.grad().dtype() == DType::f32);
  REQUIRE(w16.grad().dtype() == DType::f32);
  const std::vector<float> gv = g.to_vector();
  reference_product(gv, wv, n, in, out, false, false, exact, abs_sum);  // dx = g · w
  check_product(x16.grad().to_vector(), exact, abs_sum, out, false, options.cpu_matmul_bf16);
  reference_product(gv, xv, out, in, n, true, false, exact, abs_sum);  // dw = gᵀ · x
  check_product(w16.grad().to_vector(), exact, abs_sum, n, false, options.cpu_matmul_bf16);
  std::vector<float> db(static_cast<std::size_t>(out), 0.f);
  std::vector<double> db_exact(static_cast<std::size_t>(out), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < out; ++j) db_exact[j] += gv[i * out + j];
  const std::vector<float> db_got = bias.grad().to_vector();
  for (int64_t j = 0; j < out; ++j) CHECK(db_got[j] == Approx(db_exact[j]).margin(1e-5));
}

TEST_CASE("batched matmul of bf16 operands and linear_gelu on bf16 stay within the derived bound") {
  const int64_t b = 3, m = 9, k = 40, n = 11;
  const Tensor a16 = randn({b, m, k}, 30).to(DType::bf16).set_requires_grad(true);
  const Tensor c16 = randn({b, n, k}, 31).to(DType::bf16).set_requires_grad(true);
  const ComputeOptions options = mixed_options();
  const ComputeScope scope(options);
  const Tensor y = lmf::matmul(a16, c16, false, true);  // (B, M, N)
  REQUIRE(y.dtype() == DType::bf16);
  const std::vector<float> av = a16.to_vector(), cv = c16.to_vector(), yv = y.to_vector();
  for (int64_t i = 0; i < b; ++i) {
    std::vector<double> exact, abs_sum;
    reference_product({av.begin() + i * m * k, av.begin() + (i + 1) * m * k},
                      {cv.begin() + i * n * k, cv.begin() + (i + 1) * n * k}, m, n, k, false, true, exact, abs_sum);
    check_product({yv.begin() + i * m * n, yv.begin() + (i + 1) * m * n}, exact, abs_sum, k, true, false);
  }
  // linear_gelu: the GELU of the product equals gelu() of the (rounded) product within one more
  // bf16 rounding: both see the same f32 pre-activation, so compare against the two ops.
  const Tensor x16 = randn({5, 32}, 32).to(DType::bf16);
  const Tensor w = randn({48, 32}, 33, 0.3f);
  const Tensor fused = lmf::linear_gelu(x16, w);
  REQUIRE(fused.dtype() == DType::bf16);
  ComputeOptions f32_pre = options;
  f32_pre.mixed_bf16 = false;
  Tensor pre;
  {
    const ComputeScope inner(f32_pre);  // f32 output of the same product
    pre = lmf::linear(x16.to(DType::f32), rounded(w));
  }
  CHECK(fused.to_vector() == bf16_of(lmf::gelu(pre).to_vector()));
}

TEST_CASE("linear under mixed precision reads the weight's bf16 copy, refreshed only on request; grads stay f32") {
  Generator init(3);
  lmf::nn::Linear layer(16, 8, true, init);
  const Tensor x = randn({4, 16}, 40);
  const Tensor w = layer.weight();
  layer.refresh_bf16_copies();
  REQUIRE(w.impl()->bf16_copy);
  const std::vector<float> copy = Tensor(w.impl()->bf16_copy).to_vector();
  CHECK(copy == bf16_of(w.to_vector()));
  const ComputeScope scope(mixed_options());
  const Tensor y = layer.forward(x);
  CHECK(y.dtype() == DType::bf16);
  y.backward(randn({4, 8}, 41));
  CHECK(w.grad().dtype() == DType::f32);  // into the f32 gradient slab
  CHECK(w.grad().storage() == layer.grad_slab().storage());
  // The product read the copy, not the f32 weight: zeroing the weight changes nothing until the
  // copy is refreshed (the trainer refreshes after every optimizer step).
  {
    lmf::NoGradGuard no_grad;
    Tensor(w).zero_();
  }
  const std::vector<float> before = lmf::linear(x, w).to_vector();
  CHECK(before != std::vector<float>(before.size(), 0.f));
  layer.refresh_bf16_copies();
  CHECK(lmf::linear(x, w).to_vector() == std::vector<float>(before.size(), 0.f));
  layer.clear_bf16_copies();
  CHECK_FALSE(w.impl()->bf16_copy);
}
