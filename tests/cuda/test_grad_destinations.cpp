// The autograd engine's destinations on a GPU: a tied weight (embedding, then the head) whose
// gradient is a view into a gradient slab on the device receives both contributions in place, as
// on the CPU; the CPU run is the reference, within the error of bf16 products.
#include "cuda/cuda_test_util.h"
#include "lmforge/ops.h"

using lmf::Tensor;

namespace {

// loss of ids -> embedding(w) -> gelu -> linear(., w, b) -> cross-entropy, then backward; returns
// w's and b's gradients. w's gradient is a view into a padded zero slab on w's device.
struct Result {
  std::vector<float> w_grad, b_grad, padding;
};

Result run(const Tensor& w_in, const Tensor& b_in, const Tensor& ids, const Tensor& targets, int passes) {
  const lmf::Device dev = ids.device();
  const int64_t v = w_in.size(0), c = w_in.size(1), pad = 32;
  Tensor slab = Tensor::zeros({pad + v * c + pad}, lmf::DType::f32, dev);
  Tensor w = w_in.to(dev).detach().set_requires_grad(true);
  Tensor b = b_in.to(dev).detach().set_requires_grad(true);
  w.set_grad(lmf::reshape(lmf::slice(slab, 0, pad, pad + v * c), {v, c}));
  b.set_grad(Tensor::zeros({v}, lmf::DType::f32, dev));
  const float* row0 = w.grad().data<float>();
  for (int i = 0; i < passes; ++i)
    lmf::cross_entropy(lmf::linear(lmf::gelu(lmf::embedding(w, ids)), w, b), targets).backward();
  CHECK(w.grad().data<float>() == row0);  // filled in place
  std::vector<float> all = slab.to(lmf::Device::cpu()).to_vector(), padding(all.begin(), all.begin() + pad);
  padding.insert(padding.end(), all.end() - pad, all.end());
  return {w.grad().to(lmf::Device::cpu()).to_vector(), b.grad().to(lmf::Device::cpu()).to_vector(), padding};
}

Tensor rounded(const Tensor& t) { return Tensor::from_vector(lmf::test::round_bf16(t.to_vector()), t.shape()); }

}  // namespace

TEST_CASE("a tied weight's gradients accumulate into its slab view on the GPU as on the CPU", "[cuda][autograd]") {
  LMF_SKIP_WITHOUT_GPU();
  lmf::Generator gen(5);
  const int64_t v = 96, c = 64, b = 4, t = 80;  // B*T = 320 rows: two K slices of the CPU GEMM
  const Tensor w = Tensor::randn({v, c}, gen), bias = Tensor::randn({v}, gen);
  std::vector<int32_t> ids(b * t), targets(b * t);
  for (int64_t i = 0; i < b * t; ++i) ids[i] = int32_t((i * 31) % v), targets[i] = int32_t((i * 17 + 3) % v);
  const Tensor id_cpu = Tensor::from_vector(ids, {b, t}), tg_cpu = Tensor::from_vector(targets, {b, t});
  const Tensor id_gpu = id_cpu.to(lmf::Device::cuda()), tg_gpu = tg_cpu.to(lmf::Device::cuda());
  for (int passes : {1, 2}) {  // the second backward accumulates onto the first
    CAPTURE(passes);
    const Result cpu = run(w, bias, id_cpu, tg_cpu, passes);
    const Result cpu16 = run(rounded(w), rounded(bias), id_cpu, tg_cpu, passes);
    const Result gpu = run(w, bias, id_gpu, tg_gpu, passes);
    using lmf::test::bf16_error;
    using lmf::test::max_abs_diff;
    CHECK(max_abs_diff(gpu.w_grad, cpu.w_grad) <= 3 * bf16_error(cpu.w_grad, cpu16.w_grad));
    CHECK(max_abs_diff(gpu.b_grad, cpu.b_grad) <= 3 * bf16_error(cpu.b_grad, cpu16.b_grad));
    CHECK(gpu.padding == std::vector<float>(gpu.padding.size(), 0.f));
  }
}
