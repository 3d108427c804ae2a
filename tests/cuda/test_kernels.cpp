// The memory-bound CUDA kernels against the CPU reference kernels (src/backend/cpu), each on fresh
// random inputs with NaN-poisoned outputs: elementwise with broadcast and its reductions, full and
// per-dim sums, layernorm, GELU, softmax, fused cross-entropy, embedding (and that its backward is
// bitwise deterministic), Philox dropout (bitwise equal to the CPU), AdamW, strided copies.
// f32 kernels must sit well inside the error budget of the same computation in bf16.
#include <numeric>

#include "backend/cpu/cpu_kernels.h"
#include "cuda/cuda_test_util.h"
#include "lmforge/core/rng.h"

namespace k = lmf::kernels;
using lmf::test::bf16_error;
using lmf::test::DeviceBuffer;
using lmf::test::max_abs_diff;
using lmf::test::random_vector;
using lmf::test::round_bf16;

namespace {
// f32 GPU kernels are compared to the f32 CPU within a quarter of the bf16 budget.
constexpr double kF32Share = 0.25;
}  // namespace

TEST_CASE("elementwise add, mul and their broadcast reductions match the CPU", "[cuda][elementwise]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t rows = 37, nb = 129, n = rows * nb;
  const auto a = random_vector(n, 1), b = random_vector(nb, 2), g = random_vector(n, 3);
  DeviceBuffer<float> da(a), db(b), dg(g), out(n), grad_a(n), grad_b(nb);
  k::add_forward(out.get(), da.get(), db.get(), n, nb, nullptr);
  std::vector<float> ref(n);
  lmf::cpu::add_forward(ref.data(), a.data(), b.data(), n, nb);
  CHECK(max_abs_diff(out.download(), ref) == 0);
  out.poison();
  k::mul_forward(out.get(), da.get(), db.get(), n, nb, nullptr);
  lmf::cpu::mul_forward(ref.data(), a.data(), b.data(), n, nb);
  CHECK(max_abs_diff(out.download(), ref) == 0);

  k::mul_backward(grad_a.get(), grad_b.get(), dg.get(), da.get(), db.get(), n, nb, nullptr);
  std::vector<float> ref_a(n), ref_b(nb), ref_b16(nb), unused(n);
  lmf::cpu::mul_backward(ref_a.data(), ref_b.data(), g.data(), a.data(), b.data(), n, nb);
  lmf::cpu::mul_backward(unused.data(), ref_b16.data(), round_bf16(g).data(), round_bf16(a).data(),
                         round_bf16(b).data(), n, nb);
  CHECK(max_abs_diff(grad_a.download(), ref_a) == 0);
  CHECK(max_abs_diff(grad_b.download(), ref_b) <= kF32Share * bf16_error(ref_b, ref_b16));
}

TEST_CASE("column sums over many row chunks match the CPU", "[cuda][elementwise]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t rows = 5000, cols = 70;
  const auto x = random_vector(rows * cols, 4);
  DeviceBuffer<float> dx(x), out(cols);
  k::column_sums(out.get(), dx.get(), nullptr, rows, cols, 1.f, nullptr);
  std::vector<float> ref(cols), ref16(cols);
  lmf::cpu::column_sums(x.data(), ref.data(), rows, cols);
  lmf::cpu::column_sums(round_bf16(x).data(), ref16.data(), rows, cols);
  CHECK(max_abs_diff(out.download(), ref) <= kF32Share * bf16_error(ref, ref16));
}

TEST_CASE("sum of all elements and of squares, and sums over one dim", "[cuda][reduce]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t n = 1000003;
  const auto x = random_vector(n, 5);
  DeviceBuffer<float> dx(x), out(1), work(k::kReducePartials);
  k::sum_all(out.get(), dx.get(), n, 1.f, false, work.get(), nullptr);
  const double ref = lmf::cpu::sum_all(x.data(), n), ref16 = lmf::cpu::sum_all(round_bf16(x).data(), n);
  CHECK(std::fabs(out.download()[0] - ref) <= std::max(1e-3, std::fabs(ref - ref16)));
  std::vector<float> sq(n);
  for (int64_t i = 0; i < n; ++i) sq[i] = x[i] * x[i];
  k::sum_all(out.get(), dx.get(), n, 1.f, true, work.get(), nullptr);
  const double ref_sq = lmf::cpu::sum_all(sq.data(), n);
  CHECK(std::fabs(out.download()[0] - ref_sq) <= 1e-4 * ref_sq);

  const int64_t outer = 6, d = 50, inner = 33;
  const auto y = random_vector(outer * d * inner, 6);
  DeviceBuffer<float> dy(y), dout(outer * inner), dgrad(outer * d * inner);
  k::sum_dim_forward(dout.get(), dy.get(), outer, d, inner, 0.5f, nullptr);
  std::vector<float> r(outer * inner), r16(outer * inner);
  lmf::cpu::sum_dim_forward(r.data(), y.data(), outer, d, inner, 0.5f);
  lmf::cpu::sum_dim_forward(r16.data(), round_bf16(y).data(), outer, d, inner, 0.5f);
  CHECK(max_abs_diff(dout.download(), r) <= kF32Share * bf16_error(r, r16));
  k::sum_dim_backward(dgrad.get(), dout.get(), outer, d, inner, 2.f, nullptr);
  std::vector<float> rg(outer * d * inner);
  lmf::cpu::sum_dim_backward(rg.data(), dout.download().data(), outer, d, inner, 2.f);
  CHECK(max_abs_diff(dgrad.download(), rg) == 0);
}

TEST_CASE("layernorm forward and backward match the CPU", "[cuda][layernorm]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t n = 300, c = 200;
  const auto x = random_vector(n * c, 7, 2.f), w = random_vector(c, 8), b = random_vector(c, 9);
  const auto g = random_vector(n * c, 10);
  auto cpu = [&](const std::vector<float>& xs, const std::vector<float>& ws, const std::vector<float>& gs) {
    std::vector<float> out(n * c), mean(n), rstd(n), dx(n * c), dw(c), db(c);
    lmf::cpu::layer_norm_forward(out.data(), mean.data(), rstd.data(), xs.data(), ws.data(), b.data(), n, c, 1e-5f);
    lmf::cpu::layer_norm_backward(dx.data(), dw.data(), db.data(), gs.data(), xs.data(), ws.data(), mean.data(),
                                  rstd.data(), n, c);
    return std::vector<std::vector<float>>{out, dx, dw, db};
  };
  const auto ref = cpu(x, w, g), ref16 = cpu(round_bf16(x), round_bf16(w), round_bf16(g));
  DeviceBuffer<float> dx_in(x), dw_in(w), db_in(b), dg(g), out(n * c), mean(n), rstd(n), dx(n * c), dw(c), db(c);
  DeviceBuffer<float> work(k::layernorm_backward_workspace(n, c));
  k::layernorm_forward(out.get(), mean.get(), rstd.get(), dx_in.get(), dw_in.get(), db_in.get(), n, c, 1e-5f, nullptr);
  k::layernorm_backward(dx.get(), dw.get(), db.get(), dg.get(), dx_in.get(), dw_in.get(), mean.get(), rstd.get(), n,
                        c, work.get(), nullptr);
  CHECK(max_abs_diff(out.download(), ref[0]) <= kF32Share * bf16_error(ref[0], ref16[0]));
  CHECK(max_abs_diff(dx.download(), ref[1]) <= kF32Share * bf16_error(ref[1], ref16[1]));
  CHECK(max_abs_diff(dw.download(), ref[2]) <= kF32Share * bf16_error(ref[2], ref16[2]));
  CHECK(max_abs_diff(db.download(), ref[3]) <= kF32Share * bf16_error(ref[3], ref16[3]));
}

TEST_CASE("GELU and softmax forward and backward match the CPU", "[cuda][gelu][softmax]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t n = 64, c = 1000;
  const auto x = random_vector(n * c, 12, 3.f), g = random_vector(n * c, 13);
  DeviceBuffer<float> dx_in(x), dg(g), out(n * c), grad(n * c);
  std::vector<float> ref(n * c), ref16(n * c), rgrad(n * c), rgrad16(n * c);

  k::gelu_forward(out.get(), dx_in.get(), n * c, nullptr);
  k::gelu_backward(grad.get(), dg.get(), dx_in.get(), n * c, nullptr);
  lmf::cpu::gelu_forward(ref.data(), x.data(), n * c);
  lmf::cpu::gelu_forward(ref16.data(), round_bf16(x).data(), n * c);
  lmf::cpu::gelu_backward(rgrad.data(), g.data(), x.data(), n * c);
  lmf::cpu::gelu_backward(rgrad16.data(), round_bf16(g).data(), round_bf16(x).data(), n * c);
  CHECK(max_abs_diff(out.download(), ref) <= kF32Share * bf16_error(ref, ref16));
  CHECK(max_abs_diff(grad.download(), rgrad) <= kF32Share * bf16_error(rgrad, rgrad16));

  out.poison();
  grad.poison();
  k::softmax_forward(out.get(), dx_in.get(), n, c, nullptr);
  lmf::cpu::softmax_forward(ref.data(), x.data(), n, c);
  lmf::cpu::softmax_forward(ref16.data(), round_bf16(x).data(), n, c);
  CHECK(max_abs_diff(out.download(), ref) <= kF32Share * bf16_error(ref, ref16));
  DeviceBuffer<float> y(ref);
  k::softmax_backward(grad.get(), dg.get(), y.get(), n, c, nullptr);
  lmf::cpu::softmax_backward(rgrad.data(), g.data(), ref.data(), n, c);
  lmf::cpu::softmax_backward(rgrad16.data(), round_bf16(g).data(), round_bf16(ref).data(), n, c);
  CHECK(max_abs_diff(grad.download(), rgrad) <= kF32Share * bf16_error(rgrad, rgrad16));
}

TEST_CASE("fused cross-entropy over a large vocabulary matches the CPU, with ignored rows", "[cuda][cross_entropy]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t n = 24, v = 50304;
  const auto logits = random_vector(n * v, 14, 4.f);
  std::vector<int32_t> targets(n);
  for (int64_t i = 0; i < n; ++i) targets[i] = static_cast<int32_t>((i * 7919) % v);
  targets[3] = targets[10] = -1;
  DeviceBuffer<float> dl(logits), loss(1), count(1), losses(n), lse(n), dlogits(n * v), dloss(std::vector<float>{2.f});
  DeviceBuffer<int32_t> dt(targets);
  k::cross_entropy_forward(loss.get(), count.get(), losses.get(), lse.get(), dl.get(), dt.get(), n, v, -1, nullptr);
  k::cross_entropy_backward(dlogits.get(), dl.get(), lse.get(), dt.get(), dloss.get(), count.get(), n, v, -1, nullptr);

  auto cpu = [&](const std::vector<float>& x) {
    std::vector<float> mean(1), count_cpu(1), row_lse(n), grad(n * v);
    const float dloss_cpu = 2.f;
    lmf::cpu::cross_entropy_forward(mean.data(), count_cpu.data(), row_lse.data(), x.data(), targets.data(), n, v, -1);
    lmf::cpu::cross_entropy_backward(grad.data(), x.data(), row_lse.data(), targets.data(), &dloss_cpu,
                                     count_cpu.data(), n, v, -1);
    return std::make_tuple(mean, row_lse, grad, static_cast<int64_t>(count_cpu[0]));
  };
  const auto [ref_loss, ref_lse, ref_grad, counted] = cpu(logits);
  const auto [ref_loss16, ref_lse16, ref_grad16, counted16] = cpu(round_bf16(logits));
  CHECK(count.download()[0] == static_cast<float>(counted));
  CHECK(max_abs_diff(loss.download(), ref_loss) <= kF32Share * bf16_error(ref_loss, ref_loss16));
  CHECK(max_abs_diff(lse.download(), ref_lse) <= kF32Share * bf16_error(ref_lse, ref_lse16));
  CHECK(max_abs_diff(dlogits.download(), ref_grad) <= kF32Share * bf16_error(ref_grad, ref_grad16));
}

TEST_CASE("embedding forward matches the CPU and the backward is exact and bitwise deterministic",
          "[cuda][embedding]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t v = 1000, c = 96, n = 4096;
  const auto weight = random_vector(v * c, 15), g = random_vector(n * c, 16);
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * i * 31 + 7) % 50);  // many repeats
  DeviceBuffer<float> dw(weight), dg(g), out(n * c), grad(v * c), grad2(v * c);
  DeviceBuffer<int32_t> dids(ids);
  k::embedding_forward_i32(out.get(), dw.get(), dids.get(), n, c, nullptr);
  std::vector<float> ref(n * c), ref_grad(v * c);
  lmf::cpu::embedding_forward_i32(ref.data(), weight.data(), ids.data(), n, c);
  CHECK(max_abs_diff(out.download(), ref) == 0);

  const std::size_t bytes = k::embedding_backward_workspace(n);
  DeviceBuffer<char> work(bytes);
  k::embedding_backward(grad.get(), dg.get(), dids.get(), n, c, v, false, work.get(), bytes, nullptr);
  k::embedding_backward(grad2.get(), dg.get(), dids.get(), n, c, v, false, work.get(), bytes, nullptr);
  lmf::cpu::embedding_backward_i32(ref_grad.data(), g.data(), ids.data(), n, c, v);
  const auto got = grad.download();
  // Both sum each id's rows in position order, so they agree exactly; unused rows are zero.
  CHECK(max_abs_diff(got, ref_grad) == 0);
  CHECK(got == grad2.download());
}

TEST_CASE("id validation finds the first id outside the vocabulary", "[cuda][embedding]") {
  LMF_SKIP_WITHOUT_GPU();
  DeviceBuffer<int32_t> ids(std::vector<int32_t>{1, 2, -1, 9, 70, 3});
  DeviceBuffer<long long> first(1);
  k::find_invalid_ids_i32(first.get(), ids.get(), 6, 10, -1, nullptr);
  CHECK(first.download()[0] == 4);
  k::find_invalid_ids_i32(first.get(), ids.get(), 6, 100, -1, nullptr);
  CHECK(first.download()[0] == 6);
}

TEST_CASE("dropout masks are bit-identical to the CPU's Philox draws", "[cuda][dropout]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t n = 100003;
  const auto x = random_vector(n, 17);
  DeviceBuffer<float> dx(x), out(n);
  const uint64_t seed = 0x9E3779B97F4A7C15ull, base = (uint64_t(1) << 33) + 12345;
  k::dropout_apply(out.get(), dx.get(), n, 0.3f, seed, base, nullptr);
  std::vector<float> ref(n);
  lmf::cpu::dropout_apply(ref.data(), x.data(), n, 0.3f, seed, base);
  CHECK(out.download() == ref);
}

TEST_CASE("AdamW update matches the CPU optimizer arithmetic", "[cuda][adamw]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t n = 10007;
  auto p = random_vector(n, 18), g = random_vector(n, 19), m = random_vector(n, 20, 0.1f);
  auto v = random_vector(n, 21, 0.1f);
  for (float& x : v) x = x * x;
  DeviceBuffer<float> dp(p), dg(g), dm(m), dv(v);
  const float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, decay = 1.f - lr * 0.1f;
  const float bc1 = 1.f - std::pow(b1, 3.f), bc2 = std::sqrt(1.f - std::pow(b2, 3.f));
  k::adamw_update(dp.get(), dg.get(), dm.get(), dv.get(), n, decay, lr, b1, b2, eps, bc1, bc2, nullptr);
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.f - b1) * g[i];
    v[i] = b2 * v[i] + (1.f - b2) * g[i] * g[i];
    p[i] = p[i] * decay - (lr / bc1) * m[i] / (std::sqrt(v[i]) / bc2 + eps);
  }
  // Same expression order; only fused multiply-adds may differ: a few ulps of each value.
  CHECK(max_abs_diff(dm.download(), m) <= 1e-6);
  CHECK(max_abs_diff(dv.download(), v) <= 1e-6);
  CHECK(max_abs_diff(dp.download(), p) <= 1e-5);
}

TEST_CASE("strided copy transposes and converts like the CPU", "[cuda][copy]") {
  LMF_SKIP_WITHOUT_GPU();
  const int64_t a = 7, b = 9, c = 5;
  const auto x = random_vector(a * b * c, 22);
  DeviceBuffer<float> dx(x);
  DeviceBuffer<k::bf16_t> out(a * b * c);
  k::StridedLayout layout;  // the (c, a, b) permutation of x (a, b, c)
  layout.nd = 3;
  layout.shape[0] = c, layout.shape[1] = a, layout.shape[2] = b;
  layout.strides[0] = 1, layout.strides[1] = b * c, layout.strides[2] = c;
  k::strided_copy(out.get(), k::ElemType::bf16, dx.get(), k::ElemType::f32, layout, nullptr);
  const auto got = out.download();
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < a; ++j)
      for (int64_t l = 0; l < b; ++l) {
        const float expected = static_cast<float>(lmf::bf16(x[j * b * c + l * c + i]));
        const float value = __bfloat162float(got[(i * a + j) * b + l]);
        REQUIRE(value == expected);
      }
  DeviceBuffer<float> filled(1000);
  k::fill(filled.get(), k::ElemType::f32, 2.5f, 1000, nullptr);
  CHECK(filled.download() == std::vector<float>(1000, 2.5f));
}
