// The inference forward pass of GPT-2 with a key/value cache. It runs on raw f32 buffers through the
// CPU kernels instead of the autograd ops: no graph is recorded, nothing is allocated per decoding
// step, and the matrix-vector products of a one-token step are laid out so that OpenMP splits the
// weight's rows (a plain x·Wᵀ with one row of x would run on one thread).
// Shapes: B batch, TN new positions, L cached positions, C, NH, HS, V; N = B * TN rows.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "backend/cpu/cpu_kernels.h"
#include "lmforge/generate/generate.h"
#include "lmforge/nn/lora.h"

namespace lmf::generate {

KVCache::KVCache(const nn::GPTConfig& config, int64_t batch, int64_t capacity)
    : config_(config), batch_(batch), capacity_(capacity == 0 ? config.block_size : capacity) {
  config.validate();
  LMF_CHECK(batch_ > 0, "KVCache: batch must be positive, got ", batch_);
  LMF_CHECK(capacity_ > 0 && capacity_ <= config.block_size, "KVCache: capacity ", capacity_,
            " is outside [1, block_size = ", config.block_size, "]");
  const int64_t NH = config.n_head, HS = config.n_embd / config.n_head;
  for (int64_t l = 0; l < config.n_layer; ++l) {
    keys_.push_back(Tensor::zeros({batch_, NH, capacity_, HS}));    // (B, NH, T_max, HS)
    values_.push_back(Tensor::zeros({batch_, NH, capacity_, HS}));  // (B, NH, T_max, HS)
  }
}

namespace {

// A parameter as a raw pointer; an undefined tensor (a bias of a bias-free model) is null.
const float* param_ptr(const Tensor& t, const char* name) {
  if (!t.defined()) return nullptr;
  LMF_CHECK(t.device().is_cpu() && t.dtype() == DType::f32 && t.is_contiguous(),
            "generation runs on contiguous f32 CPU parameters; ", name, " is ", t.str());
  return t.data<float>();
}

// Below this many rows a product is computed as W·xᵀ so that its output rows (the weight's rows)
// are what the GEMM splits across threads.
constexpr int64_t kDirectRows = 16;

// out (N, OUT) = x (N, IN) · w (OUT, IN)ᵀ + b (OUT); tmp holds OUT * N floats.
void linear_rows(float* out, const float* x, const float* w, const float* b, int64_t n, int64_t in,
                 int64_t out_features, float* tmp) {
  if (n >= kDirectRows) {
    cpu::gemm(x, w, out, n, out_features, in, false, true);
  } else if (n == 1) {
    cpu::gemm(w, x, out, out_features, 1, in, false, true);  // (OUT, 1) is (1, OUT)
  } else {
    cpu::gemm(w, x, tmp, out_features, n, in, false, true);  // (OUT, N)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t o = 0; o < out_features; ++o) out[r * out_features + o] = tmp[o * n + r];
  }
  if (b) {
    for (int64_t r = 0; r < n; ++r)
      for (int64_t o = 0; o < out_features; ++o) out[r * out_features + o] += b[o];
  }
}

// Copies the new keys and values out of qkv (N, 3C) into the cache at positions [L, L + TN), then
// attends every new query to positions [0, its own] of the cache. att (N, C); scores holds one
// row of `capacity` floats per thread.
void cached_attention(float* att, const float* qkv, float* keys, float* values, float* scores,
                      int64_t B, int64_t TN, int64_t L, int64_t capacity, int64_t NH, int64_t HS) {
  const int64_t C = NH * HS;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < TN; ++t)
      for (int64_t h = 0; h < NH; ++h) {
        const float* row = qkv + (b * TN + t) * 3 * C + h * HS;
        const int64_t dst = ((b * NH + h) * capacity + L + t) * HS;
        std::memcpy(keys + dst, row + C, static_cast<std::size_t>(HS) * sizeof(float));
        std::memcpy(values + dst, row + 2 * C, static_cast<std::size_t>(HS) * sizeof(float));
      }
  const float scale = 1.f / std::sqrt(static_cast<float>(HS));
  const int64_t items = B * NH * TN;
#pragma omp parallel for schedule(dynamic, 1) if (items > 1 && items * (L + TN) * HS > 32768)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t t = item % TN, h = (item / TN) % NH, b = item / (TN * NH);
    const int64_t last = L + t;  // causal: keys 0..last
    const float* q = qkv + (b * TN + t) * 3 * C + h * HS;
    const float* k = keys + (b * NH + h) * capacity * HS;    // (T_max, HS)
    const float* v = values + (b * NH + h) * capacity * HS;  // (T_max, HS)
    float* s = scores + static_cast<int64_t>(omp_get_thread_num()) * capacity;
    float max_score = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j <= last; ++j) {
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < HS; ++d) dot += q[d] * k[j * HS + d];
      s[j] = dot * scale;
      max_score = std::max(max_score, s[j]);
    }
    float total = 0.f;
    for (int64_t j = 0; j <= last; ++j) {
      s[j] = std::exp(s[j] - max_score);
      total += s[j];
    }
    float* y = att + (b * TN + t) * C + h * HS;
    std::fill(y, y + HS, 0.f);
    const float inv_total = 1.f / total;
    for (int64_t j = 0; j <= last; ++j) {
      const float p = s[j] * inv_total;
#pragma omp simd
      for (int64_t d = 0; d < HS; ++d) y[d] += p * v[j * HS + d];
    }
  }
}

}  // namespace

Tensor forward_step(const nn::GPT& gpt, KVCache& cache, const Tensor& ids_in) {
  const nn::GPTConfig& cfg = gpt.config();
  LMF_CHECK(ids_in.dim() == 2, "forward_step: ids must be (B, T), got ", shape_str(ids_in.shape()));
  LMF_CHECK(ids_in.dtype() == DType::i32 || ids_in.dtype() == DType::u16,
            "forward_step: ids must be i32 or u16, got ", dtype_name(ids_in.dtype()));
  const int64_t B = ids_in.size(0), TN = ids_in.size(1), L = cache.length();
  const int64_t C = cfg.n_embd, NH = cfg.n_head, HS = C / NH, V = cfg.vocab_size;
  LMF_CHECK(cache.config_.n_layer == cfg.n_layer && cache.config_.n_head == NH &&
                cache.config_.n_embd == C,
            "forward_step: the cache was built for another model shape");
  LMF_CHECK(B == cache.batch(), "forward_step: ids have batch ", B, " but the cache holds ",
            cache.batch(), " sequences");
  LMF_CHECK(TN >= 1, "forward_step: no new tokens");
  // This pass reads the Linear weights directly, so adapters would be silently ignored.
  LMF_CHECK(!nn::has_lora(gpt), "forward_step: the model has LoRA adapters, which the cached "
            "forward pass does not apply; merge them first (nn::merge_lora)");
  LMF_CHECK(L + TN <= cache.capacity(), "forward_step: ", L, " cached + ", TN,
            " new positions exceed the cache capacity ", cache.capacity(),
            " (slide the window: clear the cache and feed the last block_size tokens)");

  // Ids, checked before any state changes so that a bad id leaves the cache as it was.
  const Tensor ids = ids_in.to(Device::cpu()).contiguous_copy();
  const int64_t N = B * TN;
  std::vector<int32_t> tokens(static_cast<std::size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const int64_t id = ids.dtype() == DType::i32 ? ids.data<int32_t>()[i] : ids.data<uint16_t>()[i];
    LMF_CHECK(id >= 0 && id < V, "token id ", id, " at (", i / TN, ", ", i % TN,
              ") is outside the vocabulary [0, ", V, ")");
    tokens[static_cast<std::size_t>(i)] = static_cast<int32_t>(id);
  }

  // Workspace: x, h, att (N, C); qkv (N, 3C); fc (N, 4C); mean, rstd (N); tmp (max(4C, V) * N
  // rows for the transposed products); one score row per thread.
  const int64_t threads = omp_get_max_threads();
  const int64_t tmp_size = std::max(4 * C, V) * std::max(N, B);
  const std::size_t need =
      static_cast<std::size_t>(N * (3 * C + 3 * C + 4 * C) + 2 * N + tmp_size +
                               threads * cache.capacity());
  if (cache.work_.size() < need) cache.work_.resize(need);
  float* x = cache.work_.data();    // (N, C) residual stream
  float* h = x + N * C;             // (N, C)
  float* att = h + N * C;           // (N, C)
  float* qkv = att + N * C;         // (N, 3C)
  float* fc = qkv + N * 3 * C;      // (N, 4C)
  float* mean = fc + N * 4 * C;     // (N)
  float* rstd = mean + N;           // (N)
  float* tmp = rstd + N;            // (tmp_size)
  float* scores = tmp + tmp_size;   // (threads, T_max)

  const float* wte = param_ptr(gpt.wte().weight(), "wte.weight");  // (V, C)
  const float* wpe = param_ptr(gpt.wpe().weight(), "wpe.weight");  // (block_size, C)
  for (int64_t i = 0; i < N; ++i) {
    const float* te = wte + tokens[static_cast<std::size_t>(i)] * C;
    const float* pe = wpe + (L + i % TN) * C;
    for (int64_t c = 0; c < C; ++c) x[i * C + c] = te[c] + pe[c];
  }

  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const nn::Block& blk = gpt.block(l);
    const auto& ln1 = blk.ln_1();
    cpu::layer_norm_forward(h, mean, rstd, x, param_ptr(ln1.weight(), "ln_1.weight"),
                            param_ptr(ln1.bias(), "ln_1.bias"), N, C, ln1.eps());
    const auto& ca = blk.attn().c_attn();
    linear_rows(qkv, h, param_ptr(ca.weight(), "c_attn.weight"), param_ptr(ca.bias(), "c_attn.bias"),
                N, C, 3 * C, tmp);
    cached_attention(att, qkv, cache.keys_[l].data<float>(), cache.values_[l].data<float>(), scores,
                     B, TN, L, cache.capacity(), NH, HS);
    const auto& cp = blk.attn().c_proj();
    linear_rows(h, att, param_ptr(cp.weight(), "attn.c_proj.weight"),
                param_ptr(cp.bias(), "attn.c_proj.bias"), N, C, C, tmp);
    cpu::add_forward(x, x, h, N * C, N * C);

    const auto& ln2 = blk.ln_2();
    cpu::layer_norm_forward(h, mean, rstd, x, param_ptr(ln2.weight(), "ln_2.weight"),
                            param_ptr(ln2.bias(), "ln_2.bias"), N, C, ln2.eps());
    const auto& fc_layer = blk.mlp().c_fc();
    linear_rows(fc, h, param_ptr(fc_layer.weight(), "mlp.c_fc.weight"),
                param_ptr(fc_layer.bias(), "mlp.c_fc.bias"), N, C, 4 * C, tmp);
    cpu::gelu_forward(fc, fc, N * 4 * C);
    const auto& mp = blk.mlp().c_proj();
    linear_rows(h, fc, param_ptr(mp.weight(), "mlp.c_proj.weight"),
                param_ptr(mp.bias(), "mlp.c_proj.bias"), N, 4 * C, C, tmp);
    cpu::add_forward(x, x, h, N * C, N * C);
  }
  cache.length_ = L + TN;

  // Only the last new position of each sequence needs ln_f and the head.
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(att + b * C, x + (b * TN + TN - 1) * C, static_cast<std::size_t>(C) * sizeof(float));
  const auto& lnf = gpt.ln_f();
  cpu::layer_norm_forward(h, mean, rstd, att, param_ptr(lnf.weight(), "ln_f.weight"),
                          param_ptr(lnf.bias(), "ln_f.bias"), B, C, lnf.eps());
  Tensor logits = Tensor::empty({B, V});  // (B, V), tied head: h · wteᵀ
  linear_rows(logits.data<float>(), h, wte, nullptr, B, C, V, tmp);
  return logits;
}

std::vector<float> forward_step(const nn::GPT& gpt, KVCache& cache,
                                const std::vector<int32_t>& ids) {
  const Tensor logits =
      forward_step(gpt, cache, Tensor::from_vector(ids, {1, static_cast<int64_t>(ids.size())}));
  return logits.to_vector();
}

}  // namespace lmf::generate
