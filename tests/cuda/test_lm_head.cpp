// lm_head_cross_entropy on the GPU (src/ops/lm_head.cpp through the CUDA GEMM and cross-entropy
// kernels): against the unfused cross_entropy(linear(x, w)) on the same GPU (the same products row
// by row, so only the chunk sums' order differs), against the CPU within the bf16 budget of the
// GPU's products, for several chunkings with ignored targets; and GPT::forward_loss, which uses it
// on a GPU, against the model's unfused loss and gradients; the same for Llama::forward_loss.
#include <cmath>
#include <utility>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/llama.h"
#include "lmforge/ops.h"

using lmf::Tensor;

namespace {

struct Result {
  float loss;
  std::vector<float> dx, dw;
};

Result run(const Tensor& x_in, const Tensor& w_in, const Tensor& targets, int64_t chunk, bool fused) {
  Tensor x = x_in.detach().set_requires_grad(true), w = w_in.detach().set_requires_grad(true);
  const Tensor loss =
      fused ? lmf::lm_head_cross_entropy(x, w, targets, -1, chunk) : lmf::cross_entropy(lmf::linear(x, w), targets, -1);
  loss.backward();
  return {loss.item(), x.grad().to_vector(), w.grad().to_vector()};
}

Tensor rounded(const Tensor& t) { return t.to(lmf::DType::bf16).to(lmf::DType::f32); }


// A (4, 32) batch of ids cycling through a vocabulary of 300 and their next ids, on the GPU;
// `ignored` positions get the ignore target -1.
std::pair<Tensor, Tensor> cycling_batch(std::initializer_list<std::size_t> ignored = {}) {
  std::vector<int32_t> ids(4 * 32), next(4 * 32);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7) % 300), next[i] = int32_t((i * 7 + 1) % 300);
  for (std::size_t i : ignored) next[i] = -1;
  return {Tensor::from_vector(ids, {4, 32}).to(lmf::Device::cuda()),
          Tensor::from_vector(next, {4, 32}).to(lmf::Device::cuda())};
}

// model.forward_loss (the chunked head) against forward_with_loss (logits, then cross-entropy):
// the same bf16-rounded products on both paths, only the order of the row sums differs. Returns
// the unfused path's loss and gradients for further comparisons.
template <class Model>
std::pair<float, std::vector<float>> check_fused_loss(Model& model, const Tensor& in, const Tensor& tg) {
  model.zero_grad();
  const Tensor unfused = model.forward_with_loss(in, tg).loss;
  unfused.backward();
  std::vector<float> g_unfused = model.slab()->grads().to_vector();
  model.zero_grad();
  const Tensor fused = model.forward_loss(in, tg);
  fused.backward();
  const std::vector<float> g_fused = model.slab()->grads().to_vector();
  CHECK(fused.item() == Approx(unfused.item()).epsilon(1e-5));
  CHECK(lmf::test::max_abs_diff(g_fused, g_unfused) <= 1e-5 * std::max(1.0, lmf::test::max_abs(g_unfused)));
  return {unfused.item(), std::move(g_unfused)};
}

}  // namespace

TEST_CASE("lm_head_cross_entropy on the GPU follows the unfused ops and the CPU", "[cuda][lm_head]") {
  LMF_SKIP_WITHOUT_GPU();
  lmf::Generator gen(77);
  const int64_t N = 300, C = 64, V = 1000;
  const Tensor x = Tensor::randn({3, N / 3, C}, gen);
  const Tensor w = Tensor::randn({V, C}, gen, 0.f, 0.2f);
  std::vector<int32_t> t(N);
  for (int64_t i = 0; i < N; ++i) t[i] = i % 7 == 3 ? -1 : static_cast<int32_t>((i * 37) % V);
  const Tensor targets = Tensor::from_vector(t, {3, N / 3});
  const lmf::Device gpu = lmf::Device::cuda();
  const Result cpu_ref = run(x, w, targets, 0, false);
  const Result cpu_bf16 = run(rounded(x), rounded(w), targets, 0, false);
  const Result gpu_unfused = run(x.to(gpu), w.to(gpu), targets.to(gpu), 0, false);
  using lmf::test::bf16_error;
  using lmf::test::max_abs;
  using lmf::test::max_abs_diff;
  for (int64_t chunk : {int64_t(0), int64_t(64), int64_t(100), int64_t(128), int64_t(1000)}) {
    CAPTURE(chunk);
    const Result got = run(x.to(gpu), w.to(gpu), targets.to(gpu), chunk, true);
    CHECK(got.loss == Approx(gpu_unfused.loss).epsilon(1e-5));
    CHECK(max_abs_diff(got.dx, gpu_unfused.dx) <= 1e-5 * std::max(1.0, max_abs(gpu_unfused.dx)));
    CHECK(max_abs_diff(got.dw, gpu_unfused.dw) <= 1e-5 * std::max(1.0, max_abs(gpu_unfused.dw)));
    CHECK(std::fabs(got.loss - cpu_ref.loss) <= 2 * std::fabs(cpu_bf16.loss - cpu_ref.loss) + 1e-5 * std::fabs(cpu_ref.loss));
    CHECK(max_abs_diff(got.dx, cpu_ref.dx) <= 3 * bf16_error(cpu_ref.dx, cpu_bf16.dx));
    CHECK(max_abs_diff(got.dw, cpu_ref.dw) <= 3 * bf16_error(cpu_ref.dw, cpu_bf16.dw));
  }
}

TEST_CASE("GPT::forward_loss on the GPU equals its unfused loss and gradients", "[cuda][lm_head][gpt]") {
  LMF_SKIP_WITHOUT_GPU();
  lmf::nn::GPTConfig config;
  config.n_layer = 1;
  config.n_head = 2;
  config.n_embd = 64;
  config.block_size = 32;
  config.vocab_size = 300;
  lmf::nn::GPT model(config, 5);
  model.to(lmf::Device::cuda());
  const auto [in, tg] = cycling_batch();
  check_fused_loss(model, in, tg);
}

TEST_CASE("Llama::forward_loss on the GPU equals its unfused loss and gradients, tied and untied",
          "[cuda][lm_head][llama]") {
  LMF_SKIP_WITHOUT_GPU();
  for (const bool tied : {false, true}) {
    INFO("tied " << tied);
    lmf::nn::LlamaConfig config;
    config.vocab_size = 300;
    config.hidden_size = 64;
    config.intermediate_size = 96;
    config.num_hidden_layers = 1;
    config.num_attention_heads = 4;
    config.num_key_value_heads = 2;  // grouped-query heads (both attention paths take them)
    config.max_position_embeddings = 32;
    config.tie_word_embeddings = tied;
    lmf::nn::Llama model(config, 5);
    model.to(lmf::Device::cuda());
    const auto [in, tg] = cycling_batch({3});  // one ignored target
    const auto [unfused_loss, g_unfused] = check_fused_loss(model, in, tg);
    // Several chunks (48, 48 and 32 of the 128 rows) against one.
    model.zero_grad();
    const Tensor chunked = model.chunked_loss(in, tg, -1, 48);
    chunked.backward();
    CHECK(chunked.item() == Approx(unfused_loss).epsilon(1e-5));
    CHECK(lmf::test::max_abs_diff(model.slab()->grads().to_vector(), g_unfused) <=
          1e-5 * std::max(1.0, lmf::test::max_abs(g_unfused)));
  }
}
