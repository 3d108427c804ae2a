// run.precision: bf16 on a GPU, with the CPU as the reference: ops given bf16 tensors on the GPU
// compute what the GPU's f32 ops compute on the rounded values (rounding only the output), and a
// bf16 training run on the GPU follows the CPU's bf16 run within the budget tests/cuda/test_trainer.cpp
// derives (a CPU run from bf16-rounded initial weights shows how far a bf16-sized perturbation moves
// the run; the GPU, which also rounds its products' operands, may move kActivationFactor times as far).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "e2e/cli_run.h"
#include "lmforge/core/compute.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/ops.h"
#include "lmforge/train/trainer.h"
#include "train/model_io.h"
#include "train/word_corpus.h"

namespace fs = std::filesystem;
using lmf::DType;
using lmf::Tensor;
using lmf::train::Callbacks;
using lmf::train::Config;
using lmf::train::Precision;
using lmf::train::StepMetrics;
using lmf::train::Trainer;

namespace {

constexpr double kActivationFactor = 4;  // as tests/cuda/test_trainer.cpp
constexpr double kFloor = 1e-3;

Tensor randn_on(const lmf::Shape& shape, uint64_t seed, const lmf::Device& device) {
  lmf::Generator gen(seed);
  return Tensor::randn(shape, gen).to(device);
}

std::vector<float> bf16_of(const std::vector<float>& v) {
  std::vector<float> out;
  for (float f : v) out.push_back(static_cast<float>(lmf::bf16(f)));
  return out;
}

// On the GPU: op(bf16 inputs) == bf16(op(f32 inputs holding the rounded values)), gradients equal.
void check_on_gpu(std::vector<Tensor> inputs, std::vector<bool> to_bf16,
                  const std::function<Tensor(const std::vector<Tensor>&)>& op, DType expected = DType::bf16) {
  std::vector<Tensor> ref_in, mixed_in;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor x = to_bf16[i] ? inputs[i].to(DType::bf16).to(DType::f32) : inputs[i];
    ref_in.push_back(x.clone().set_requires_grad(true));
    mixed_in.push_back((to_bf16[i] ? x.to(DType::bf16) : x.clone()).set_requires_grad(true));
  }
  const Tensor ref = op(ref_in);
  lmf::ComputeOptions mixed;
  mixed.mixed_bf16 = true;
  Tensor out;
  {
    const lmf::ComputeScope scope(mixed);
    out = op(mixed_in);
  }
  REQUIRE(out.dtype() == expected);
  REQUIRE(out.device().is_cuda());
  CHECK(out.to_vector() == (expected == DType::bf16 ? bf16_of(ref.to_vector()) : ref.to_vector()));
  const Tensor g = randn_on(ref.shape(), 77, ref.device());
  ref.backward(g);
  out.backward(g);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    INFO("input " << i);
    REQUIRE(mixed_in[i].grad().defined());
    CHECK(mixed_in[i].grad().dtype() == DType::f32);
    CHECK(mixed_in[i].grad().to_vector() == ref_in[i].grad().to_vector());
  }
}

fs::path fresh_dir(const std::string& name) { return lmf::test::work_dir("cuda-mixed", name); }

const fs::path& corpus() {
  static const fs::path data = lmf::test::prepare_char_corpus(fresh_dir("corpus"), lmf::test::generated_text(400, 17));
  return data;
}

Config tiny(const std::string& device, bool llama) {
  Config c = lmf::test::tiny_run_config(fresh_dir("unused"), corpus(), 7, 12);
  c.run.device = lmf::train::DeviceSetting::parse(device);
  c.training.lr = 3e-3f;
  c.training.min_lr = 3e-4f;
  c.checkpoint.interval = 4;
  c.logging.interval = 1;
  if (llama) {
    c.model.arch = lmf::train::ModelArch::llama;
    c.model.n_head = 4;
    c.model.n_kv_head = 4;  // grouped heads on the GPU are compared op by op in test_attention_op.cpp
  }
  c.validate();
  return c;
}

std::vector<float> losses_of(Config c, Precision precision, bool round_init, const std::string& name) {
  c.run.precision = precision;
  c.run.out_dir = fresh_dir(name).string();
  const int64_t vocab = lmf::data::load_tokenizer((corpus() / "tokenizer.json").string())->vocab_size();
  auto model = lmf::train::detail::build_model(c.model, vocab, c.run.seed);
  if (round_init) {
    lmf::NoGradGuard no_grad;
    Tensor slab = model->param_slab();
    slab.copy_(slab.to(DType::bf16));
  }
  std::vector<float> losses;
  Callbacks cb;
  cb.on_step = [&losses](const StepMetrics& m) {
    losses.push_back(m.train_loss);
    return true;
  };
  Trainer(c, std::move(model), cb).fit();
  return losses;
}

void check_gpu_follows_cpu(bool llama) {
  const std::string arch = llama ? "llama" : "gpt";
  const std::vector<float> cpu_f32 = losses_of(tiny("cpu", llama), Precision::fp32, false, arch + "_cpu_f32");
  const std::vector<float> cpu_rounded = losses_of(tiny("cpu", llama), Precision::fp32, true, arch + "_cpu_rounded");
  const std::vector<float> cpu_bf16 = losses_of(tiny("cpu", llama), Precision::bf16, false, arch + "_cpu_bf16");
  const std::vector<float> gpu_bf16 = losses_of(tiny("cuda", llama), Precision::bf16, false, arch + "_gpu_bf16");
  REQUIRE(gpu_bf16.size() == cpu_bf16.size());
  double perturbation = 0;
  for (std::size_t i = 0; i < cpu_bf16.size(); ++i) {
    perturbation = std::max(perturbation, std::fabs(double(cpu_rounded[i]) - double(cpu_f32[i])));
    const double bound = std::max(kActivationFactor * perturbation, kFloor * std::fabs(double(cpu_bf16[i])));
    INFO(arch << " step " << i + 1 << ": CPU bf16 " << cpu_bf16[i] << ", GPU bf16 " << gpu_bf16[i] << ", bound " << bound);
    CHECK(std::fabs(double(gpu_bf16[i]) - double(cpu_bf16[i])) <= bound);
  }
}

}  // namespace

TEST_CASE("GPU ops on bf16 tensors equal the GPU's f32 ops on the rounded values", "[cuda][mixed]") {
  LMF_SKIP_WITHOUT_GPU();
  const lmf::Device gpu = lmf::parse_device("cuda:0");
  const Tensor x = randn_on({3, 5, 32}, 1, gpu), y = randn_on({3, 5, 32}, 2, gpu), w = randn_on({32}, 3, gpu);
  check_on_gpu({x, w, w}, {true, false, false}, [](const auto& in) { return lmf::layer_norm(in[0], in[1], in[2]); });
  check_on_gpu({x, w}, {true, false}, [](const auto& in) { return lmf::rms_norm(in[0], in[1]); });
  check_on_gpu({x}, {true}, [](const auto& in) { return lmf::gelu(in[0]); });
  check_on_gpu({x, y}, {true, true}, [](const auto& in) { return lmf::swiglu(in[0], in[1]); });
  check_on_gpu({x, y}, {false, true}, [](const auto& in) { return lmf::add(in[0], in[1]); }, DType::f32);
  check_on_gpu({randn_on({2, 4, 8, 16}, 4, gpu), randn_on({2, 4, 8, 16}, 5, gpu), randn_on({2, 4, 8, 16}, 6, gpu)},
               {true, true, true}, [](const auto& in) { return lmf::attention(in[0], in[1], in[2]); });
  check_on_gpu({randn_on({2, 8, 96}, 7, gpu)}, {true}, [](const auto& in) { return lmf::causal_self_attention(in[0], 2); });
}

TEST_CASE("a bf16 GPT run on the GPU follows the CPU's bf16 run", "[cuda][mixed]") {
  LMF_SKIP_WITHOUT_GPU();
  check_gpu_follows_cpu(false);
}

TEST_CASE("a bf16 Llama run on the GPU follows the CPU's bf16 run", "[cuda][mixed]") {
  LMF_SKIP_WITHOUT_GPU();
  check_gpu_follows_cpu(true);
}
