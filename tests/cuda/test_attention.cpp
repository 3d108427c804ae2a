// Flash attention (kernels/attention.cu) against the CPU reference: forward output and lse, and
// dq, dk, dv, for the HS 64 and 128 paths, a head size that takes the padded path, and lengths that
// are not multiples of the 32-row tiles. Outputs start as NaN so unwritten elements fail.
#include "backend/cpu/cpu_kernels.h"
#include "cuda/cuda_test_util.h"

namespace k = lmf::kernels;
using lmf::test::DeviceBuffer;

namespace {

struct Result {
  std::vector<float> out, lse, dq, dk, dv;
};

Result cpu_attention(const std::vector<float>& q, const std::vector<float>& kk, const std::vector<float>& v,
                     const std::vector<float>& dout, int64_t bh, int64_t t, int64_t hs) {
  Result r;
  r.out.resize(q.size());
  r.lse.resize(bh * t);
  r.dq.resize(q.size());
  r.dk.resize(q.size());
  r.dv.resize(q.size());
  const auto l = lmf::cpu::HeadLayout::contiguous(1, t, hs);  // bh heads of one "batch" each
  const lmf::cpu::AttentionDims d{bh, 1, 1, t, t, hs};
  lmf::cpu::attention_forward(d, r.out.data(), l, r.lse.data(), q.data(), l, kk.data(), l, v.data(), l);
  lmf::cpu::attention_backward(d, r.dq.data(), l, r.dk.data(), l, r.dv.data(), l, dout.data(), l, q.data(), l,
                               kk.data(), l, v.data(), l, r.lse.data());
  return r;
}

void check_attention(int64_t bh, int64_t t, int64_t hs, uint64_t seed) {
  CAPTURE(bh, t, hs);
  const std::size_t n = bh * t * hs;
  const auto q = lmf::test::random_vector(n, seed), kk = lmf::test::random_vector(n, seed + 1);
  const auto v = lmf::test::random_vector(n, seed + 2), dout = lmf::test::random_vector(n, seed + 3);
  DeviceBuffer<float> dq_in(q), dk_in(kk), dv_in(v), ddout(dout);
  DeviceBuffer<float> out(n), lse(bh * t), dq(n), dk(n), dv(n), work(k::attention_backward_workspace(bh, t));
  k::attention_forward(out.get(), lse.get(), dq_in.get(), dk_in.get(), dv_in.get(), bh, 1, 1, t, t, hs, nullptr);
  k::attention_backward(dq.get(), dk.get(), dv.get(), ddout.get(), out.get(), dq_in.get(), dk_in.get(),
                        dv_in.get(), lse.get(), bh, t, hs, work.get(), nullptr);

  const Result ref = cpu_attention(q, kk, v, dout, bh, t, hs);
  using lmf::test::round_bf16;
  const Result ref_bf16 = cpu_attention(round_bf16(q), round_bf16(kk), round_bf16(v), round_bf16(dout), bh, t, hs);
  using lmf::test::bf16_error;
  using lmf::test::max_abs_diff;
  // f32 kernels: well inside the budget of the same computation in bf16.
  CHECK(max_abs_diff(out.download(), ref.out) <= 0.25 * bf16_error(ref.out, ref_bf16.out));
  CHECK(max_abs_diff(lse.download(), ref.lse) <= 0.25 * bf16_error(ref.lse, ref_bf16.lse));
  CHECK(max_abs_diff(dq.download(), ref.dq) <= 0.25 * bf16_error(ref.dq, ref_bf16.dq));
  CHECK(max_abs_diff(dk.download(), ref.dk) <= 0.25 * bf16_error(ref.dk, ref_bf16.dk));
  CHECK(max_abs_diff(dv.download(), ref.dv) <= 0.25 * bf16_error(ref.dv, ref_bf16.dv));
}

}  // namespace

TEST_CASE("flash attention forward and backward match the CPU at HS 64 and 128", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  check_attention(3, 100, 64, 11);
  check_attention(2, 256, 128, 21);
  check_attention(1, 1, 64, 31);
}

TEST_CASE("flash attention handles other head sizes on the padded path", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  check_attention(2, 70, 48, 41);
  check_attention(2, 33, 96, 51);
  check_attention(1, 40, 8, 61);
}

TEST_CASE("flash attention rejects head sizes above 128", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  DeviceBuffer<float> buf(2 * 4 * 160);
  CHECK_THROWS_AS(
      k::attention_forward(buf.get(), buf.get(), buf.get(), buf.get(), buf.get(), 1, 1, 1, 4, 4, 160, nullptr),
      k::CudaError);
}

namespace {

// Forward only: grouped-query heads and queries behind a cache, against the CPU kernel.
void check_forward_gqa(int64_t b, int64_t nh, int64_t nkv, int64_t tq, int64_t tk, int64_t hs, uint64_t seed) {
  CAPTURE(b, nh, nkv, tq, tk, hs);
  const std::size_t nq = b * nh * tq * hs, nk = b * nkv * tk * hs;
  const auto q = lmf::test::random_vector(nq, seed), kk = lmf::test::random_vector(nk, seed + 1);
  const auto v = lmf::test::random_vector(nk, seed + 2);
  DeviceBuffer<float> dq_in(q), dk_in(kk), dv_in(v), out(nq), lse(b * nh * tq);
  k::attention_forward(out.get(), lse.get(), dq_in.get(), dk_in.get(), dv_in.get(), b, nh, nkv, tq, tk, hs, nullptr);
  const auto run_cpu = [&](const std::vector<float>& qq, const std::vector<float>& kc, const std::vector<float>& vc) {
    Result r;
    r.out.resize(nq);
    r.lse.resize(b * nh * tq);
    const lmf::cpu::AttentionDims d{b, nh, nkv, tq, tk, hs};
    lmf::cpu::attention_forward(d, r.out.data(), lmf::cpu::HeadLayout::contiguous(nh, tq, hs), r.lse.data(),
                                qq.data(), lmf::cpu::HeadLayout::contiguous(nh, tq, hs), kc.data(),
                                lmf::cpu::HeadLayout::contiguous(nkv, tk, hs), vc.data(),
                                lmf::cpu::HeadLayout::contiguous(nkv, tk, hs));
    return r;
  };
  using lmf::test::round_bf16;
  const Result ref = run_cpu(q, kk, v), ref_bf16 = run_cpu(round_bf16(q), round_bf16(kk), round_bf16(v));
  CHECK(lmf::test::max_abs_diff(out.download(), ref.out) <= 0.25 * lmf::test::bf16_error(ref.out, ref_bf16.out));
  CHECK(lmf::test::max_abs_diff(lse.download(), ref.lse) <= 0.25 * lmf::test::bf16_error(ref.lse, ref_bf16.lse));
}

}  // namespace

TEST_CASE("flash attention forward takes grouped-query heads and queries behind a cache", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  check_forward_gqa(2, 6, 2, 40, 40, 64, 71);   // GQA, full sequence
  check_forward_gqa(1, 4, 1, 1, 77, 32, 81);    // one decoding step over a cache, MQA
  check_forward_gqa(2, 4, 4, 37, 100, 128, 91); // a chunk behind a cache
}
