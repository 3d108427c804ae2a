// Tensor-core flash attention (kernels/flash_attention.cu) against a float64 CPU reference on the
// same bf16-rounded inputs: forward O and lse, backward dQ, dK, dV; causal, HS 64 and 128, grouped
// K/V heads read in place from a fused qkv buffer, T not a multiple of the 64-row tiles.
// Tolerance (normwise, ‖gpu - ref‖ / ‖ref‖): 4x the change the reference itself shows when its
// inputs are rounded to bf16 (the kernel rounds P and dS to bf16, an error of the same order), plus
// one bf16 half-ulp (2^-9) for the rounding of O, P and dS themselves.
#include <cmath>

#include "cuda/cuda_test_util.h"

namespace k = lmf::kernels;
using lmf::test::DeviceBuffer;

namespace {

struct Dims {
  int B, NH, NKV, T, HS;
};

// Layout of the fused buffer: (B, T, (NH + 2 NKV) * HS), q heads first, then k, then v.
struct Fused {
  Dims d;
  int64_t row() const { return int64_t(d.NH + 2 * d.NKV) * d.HS; }
  int64_t at(int b, int t, int head, int c) const { return (int64_t(b) * d.T + t) * row() + int64_t(head) * d.HS + c; }
  int64_t q(int b, int t, int h, int c) const { return at(b, t, h, c); }
  int64_t k(int b, int t, int h, int c) const { return at(b, t, d.NH + h, c); }
  int64_t v(int b, int t, int h, int c) const { return at(b, t, d.NH + d.NKV + h, c); }
};

struct Reference {
  std::vector<double> o, lse, dq, dk, dv;  // o (B, NH, T, HS); dq (B, T, NH, HS); dk, dv (B, T, NKV, HS)
};

Reference reference(const Dims& d, const std::vector<float>& qkv, const std::vector<float>& dout) {
  const Fused f{d};
  const double scale = 1.0 / std::sqrt(double(d.HS));
  Reference r;
  r.o.assign(size_t(d.B) * d.NH * d.T * d.HS, 0);
  r.lse.assign(size_t(d.B) * d.NH * d.T, 0);
  r.dq.assign(size_t(d.B) * d.T * d.NH * d.HS, 0);
  r.dk.assign(size_t(d.B) * d.T * d.NKV * d.HS, 0);
  r.dv.assign(r.dk.size(), 0);
  const int group = d.NH / d.NKV;
  std::vector<double> p(d.T), dp(d.T);
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.NH; ++h) {
      const int hk = h / group;
      for (int t = 0; t < d.T; ++t) {
        double mx = -INFINITY;
        for (int s = 0; s <= t; ++s) {
          double dot = 0;
          for (int c = 0; c < d.HS; ++c) dot += double(qkv[f.q(b, t, h, c)]) * qkv[f.k(b, s, hk, c)];
          p[s] = dot * scale;
          mx = std::max(mx, p[s]);
        }
        double sum = 0;
        for (int s = 0; s <= t; ++s) sum += (p[s] = std::exp(p[s] - mx));
        for (int s = 0; s <= t; ++s) p[s] /= sum;
        r.lse[(size_t(b) * d.NH + h) * d.T + t] = mx + std::log(sum);
        double* o = &r.o[((size_t(b) * d.NH + h) * d.T + t) * d.HS];
        for (int s = 0; s <= t; ++s)
          for (int c = 0; c < d.HS; ++c) o[c] += p[s] * qkv[f.v(b, s, hk, c)];
        // Backward of this row: dP = dO·Vᵀ, dS = P (dP - dO·O), then the three products.
        const float* g = &dout[((size_t(b) * d.NH + h) * d.T + t) * d.HS];
        double dsum = 0;
        for (int c = 0; c < d.HS; ++c) dsum += double(g[c]) * o[c];
        for (int s = 0; s <= t; ++s) {
          double dot = 0;
          for (int c = 0; c < d.HS; ++c) dot += double(g[c]) * qkv[f.v(b, s, hk, c)];
          const double ds = p[s] * (dot - dsum);
          for (int c = 0; c < d.HS; ++c) {
            r.dq[((size_t(b) * d.T + t) * d.NH + h) * d.HS + c] += scale * ds * qkv[f.k(b, s, hk, c)];
            r.dk[((size_t(b) * d.T + s) * d.NKV + hk) * d.HS + c] += scale * ds * qkv[f.q(b, t, h, c)];
            r.dv[((size_t(b) * d.T + s) * d.NKV + hk) * d.HS + c] += p[s] * g[c];
          }
        }
      }
    }
  return r;
}

double rel_l2(const std::vector<float>& got, const std::vector<double>& ref) {
  REQUIRE(got.size() == ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;  // NaN: a poisoned element nobody wrote
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}
double rel_l2(const std::vector<double>& a, const std::vector<double>& ref) {
  std::vector<float> f(a.begin(), a.end());
  return rel_l2(f, ref);
}

std::vector<float> bf16_to_float(const std::vector<k::bf16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}
std::vector<k::bf16_t> float_to_bf16(const std::vector<float>& v) {
  std::vector<k::bf16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
  return out;
}

void run_case(const Dims& d, uint64_t seed) {
  CAPTURE(d.B, d.NH, d.NKV, d.T, d.HS);
  const Fused f{d};
  const std::vector<float> qkv32 = lmf::test::random_vector(size_t(d.B) * d.T * f.row(), seed);
  const std::vector<float> do32 = lmf::test::random_vector(size_t(d.B) * d.NH * d.T * d.HS, seed + 1);
  const std::vector<float> qkv = lmf::test::round_bf16(qkv32), dout = lmf::test::round_bf16(do32);
  const Reference ref = reference(d, qkv, dout);
  const Reference ref32 = reference(d, qkv32, do32);  // the same math on unrounded inputs

  DeviceBuffer<k::bf16_t> dqkv(float_to_bf16(qkv)), ddo(float_to_bf16(dout));
  DeviceBuffer<k::bf16_t> o(ref.o.size());
  DeviceBuffer<float> lse(ref.lse.size()), dq(ref.dq.size()), dk(ref.dk.size()), dv(ref.dv.size());
  k::FlashAttentionParams p;
  p.q = dqkv.get();
  p.k = dqkv.get() + int64_t(d.NH) * d.HS;
  p.v = dqkv.get() + int64_t(d.NH + d.NKV) * d.HS;
  p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = d.T * f.row();
  p.q_row_stride = p.k_row_stride = p.v_row_stride = f.row();
  p.q_head_stride = p.k_head_stride = p.v_head_stride = d.HS;
  p.o = o.get();  // (B, NH, T, HS)
  p.o_batch_stride = int64_t(d.NH) * d.T * d.HS, p.o_head_stride = int64_t(d.T) * d.HS, p.o_row_stride = d.HS;
  p.lse = lse.get();
  p.batch = d.B, p.heads = d.NH, p.kv_heads = d.NKV, p.seq = d.T, p.head_dim = d.HS;
  p.scale = 1.f / std::sqrt(float(d.HS));
  k::flash_attention_forward(p, nullptr);

  k::FlashAttentionBackwardParams bp;
  bp.fwd = p;
  bp.dout = ddo.get();  // (B, NH, T, HS) like o
  bp.do_batch_stride = p.o_batch_stride, bp.do_head_stride = p.o_head_stride, bp.do_row_stride = p.o_row_stride;
  bp.dq = dq.get(), bp.dk = dk.get(), bp.dv = dv.get();
  bp.dq_batch_stride = int64_t(d.T) * d.NH * d.HS, bp.dq_row_stride = int64_t(d.NH) * d.HS, bp.dq_head_stride = d.HS;
  bp.dk_batch_stride = bp.dv_batch_stride = int64_t(d.T) * d.NKV * d.HS;
  bp.dk_row_stride = bp.dv_row_stride = int64_t(d.NKV) * d.HS;
  bp.dk_head_stride = bp.dv_head_stride = d.HS;
  DeviceBuffer<float> work(size_t(k::flash_attention_backward_workspace(d.B, d.NH, d.T, d.HS)));
  bp.workspace = work.get();
  k::flash_attention_backward(bp, nullptr);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);

  const double half_ulp = std::ldexp(1.0, -9);
  auto check = [&](const char* what, const std::vector<float>& got, const std::vector<double>& want,
                   const std::vector<double>& want32) {
    const double err = rel_l2(got, want), budget = 4 * rel_l2(want32, want) + half_ulp;
    CAPTURE(what, err, budget);
    CHECK(err <= budget);
  };
  check("o", bf16_to_float(o.download()), ref.o, ref32.o);
  check("dq", dq.download(), ref.dq, ref32.dq);
  check("dk", dk.download(), ref.dk, ref32.dk);
  check("dv", dv.download(), ref.dv, ref32.dv);
  const std::vector<float> got_lse = lse.download();
  double worst = 0;
  for (size_t i = 0; i < got_lse.size(); ++i) worst = std::max(worst, std::fabs(got_lse[i] - ref.lse[i]));
  CAPTURE(worst);
  CHECK(worst <= 1e-2);  // P's row sum is formed from bf16-rounded terms: relative 2^-9 at most
}

}  // namespace

TEST_CASE("flash attention matches the float64 reference (HS 64, T not a tile multiple)", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  run_case({2, 3, 3, 100, 64}, 11);
  run_case({1, 2, 2, 1, 64}, 12);
  run_case({1, 2, 2, 64, 64}, 13);
}

TEST_CASE("flash attention with grouped K/V heads and HS 128", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  run_case({1, 4, 2, 130, 128}, 21);
  run_case({2, 4, 1, 77, 64}, 22);
}

TEST_CASE("flash attention refuses unsupported shapes with a clear error", "[cuda][attention]") {
  LMF_SKIP_WITHOUT_GPU();
  k::FlashAttentionParams p;
  p.batch = 1, p.heads = 3, p.kv_heads = 2, p.seq = 8, p.head_dim = 64;
  CHECK_THROWS_WITH(k::flash_attention_forward(p, nullptr), Catch::Contains("not a multiple of NKV"));
  p.kv_heads = 3, p.head_dim = 96;
  CHECK_THROWS_WITH(k::flash_attention_forward(p, nullptr), Catch::Contains("head size 96"));
}
