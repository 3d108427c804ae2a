// One table of every op (elementwise, unary, reductions, model ops, views, the primitives), run on
// every available backend against the CPU: each row's forward output and the gradients of
// sum(out * W) for each float input must match the CPU's. On a machine without a GPU the CUDA rows
// are skipped with a printed reason; on the CPU each row still runs forward and backward and must
// give finite outputs and a gradient of the right shape for every input that takes one.
// Tolerances per row: 1e-4 relative + 1e-5 absolute for f32 math (the devices' libm and summation
// orders differ in the last bits), 3e-2 for rows whose CUDA products round operands to bf16.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;

namespace {

// How an input is drawn: normal, positive ([0.5, 2.5)), away from zero (|x| >= 0.1), a condition
// (0 or 1, no gradient), or integer ids in [0, hi) (no gradient).
enum class Kind { normal, positive, away0, cond, ids };

struct Input {
  Shape shape;
  Kind kind = Kind::normal;
  int32_t hi = 0;
};

struct Row {
  std::string name;
  std::vector<Input> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  double rtol = 1e-4;
};

constexpr double kBf16 = 3e-2;

std::vector<Row> table() {
  using V = const std::vector<Tensor>&;
  const Input x234{{2, 3, 4}}, x4{{4}}, bt1{{2, 3, 1}}, pos234{{2, 3, 4}, Kind::positive};
  return {
      // elementwise, fast and strided broadcast forms
      {"add same", {x234, x234}, [](V in) { return add(in[0], in[1]); }},
      {"add bias", {x234, x4}, [](V in) { return add(in[0], in[1]); }},
      {"add (1,C)+(R,1)", {{{1, 5}}, {{4, 1}}}, [](V in) { return add(in[0], in[1]); }},
      {"sub scalar", {x234, {{}}}, [](V in) { return sub(in[0], in[1]); }},
      {"sub strided", {{{3, 4}}, {{2, 2, 3, 4}}}, [](V in) { return sub(in[0], in[1]); }},
      {"mul bias", {x234, x4}, [](V in) { return mul(in[0], in[1]); }},
      {"mul (B,T,1)*(B,T,C)", {bt1, x234}, [](V in) { return mul(in[0], in[1]); }},
      {"div", {x234, pos234}, [](V in) { return div(in[0], in[1]); }},
      {"div broadcast", {bt1, {{4}, Kind::positive}}, [](V in) { return div(in[0], in[1]); }},
      {"scale", {x234}, [](V in) { return scale(in[0], -0.7f); }},
      // unary
      {"neg", {x234}, [](V in) { return neg(in[0]); }},
      {"exp", {x234}, [](V in) { return lmf::exp(in[0]); }},
      {"log", {pos234}, [](V in) { return lmf::log(in[0]); }},
      {"sqrt", {pos234}, [](V in) { return lmf::sqrt(in[0]); }},
      {"rsqrt", {pos234}, [](V in) { return rsqrt(in[0]); }},
      {"tanh", {x234}, [](V in) { return lmf::tanh(in[0]); }},
      {"sigmoid", {x234}, [](V in) { return sigmoid(in[0]); }},
      {"silu", {x234}, [](V in) { return silu(in[0]); }},
      {"relu", {{{2, 3, 4}, Kind::away0}}, [](V in) { return relu(in[0]); }},
      {"pow", {pos234}, [](V in) { return lmf::pow(in[0], 1.5f); }},
      {"gelu", {x234}, [](V in) { return gelu(in[0]); }},
      // reductions
      {"sum", {x234}, [](V in) { return sum(in[0]); }},
      {"mean", {x234}, [](V in) { return mean(in[0]); }},
      {"sum dim", {x234}, [](V in) { return sum(in[0], 1, true); }},
      {"mean dim", {x234}, [](V in) { return mean(in[0], 0); }},
      {"max dim", {x234}, [](V in) { return lmf::max(in[0], -1); }},
      // model ops
      {"softmax", {x234}, [](V in) { return softmax(in[0]); }},
      {"layer_norm", {x234, x4, x4}, [](V in) { return layer_norm(in[0], in[1], in[2]); }},
      {"add_layer_norm", {x234, x234, x4, x4}, [](V in) {
         const auto [s, y] = add_layer_norm(in[0], in[1], in[2], in[3]);
         return add(s, y);
       }},
      {"matmul", {{{2, 3, 4}}, {{4, 5}}}, [](V in) { return matmul(in[0], in[1]); }, kBf16},
      {"linear", {x234, {{5, 4}}, {{5}}}, [](V in) { return linear(in[0], in[1], in[2]); }, kBf16},
      {"linear_gelu", {x234, {{5, 4}}, {{5}}}, [](V in) { return linear_gelu(in[0], in[1], in[2]); }, kBf16},
      {"embedding", {{{7, 4}}, {{2, 3}, Kind::ids, 7}}, [](V in) { return embedding(in[0], in[1]); }},
      {"attention", {{{1, 2, 4, 8}}, {{1, 2, 4, 8}}, {{1, 2, 4, 8}}}, [](V in) { return attention(in[0], in[1], in[2]); }, kBf16},
      {"causal_self_attention", {{{1, 4, 24}}}, [](V in) { return causal_self_attention(in[0], 2); }, kBf16},
      {"cross_entropy", {{{6, 5}}, {{6}, Kind::ids, 5}}, [](V in) { return cross_entropy(in[0], in[1]); }},
      {"dropout", {x234}, [](V in) {
         Generator gen(7);
         return dropout(in[0], 0.25f, true, gen);
       }},
      // views and layout
      {"reshape", {x234}, [](V in) { return mul(reshape(in[0], {4, 6}), reshape(in[0], {4, 6})); }},
      {"transpose", {x234}, [](V in) { return contiguous(transpose(in[0], 0, 2)); }},
      {"permute", {x234}, [](V in) { return add(permute(in[0], {2, 0, 1}), Tensor::zeros({1})); }},
      {"slice", {x234}, [](V in) { return scale(slice(in[0], 1, 1, 3), 2.f); }},
      {"expand", {bt1}, [](V in) { return mul(expand(in[0], {2, 3, 4}), expand(in[0], {2, 3, 4})); }},
      // primitives that assemble
      {"cat", {x234, {{2, 1, 4}}}, [](V in) { return cat({in[0], in[1]}, 1); }},
      {"split", {x234}, [](V in) {
         const auto p = split(in[0], {1, 3}, -1);
         return cat({scale(p[1], 2.f), p[0]}, -1);
       }},
      {"chunk", {x234}, [](V in) {
         const auto p = chunk(in[0], 2, 1);
         return cat({p[1], scale(p[0], 3.f)}, 1);
       }},
      {"where", {{{3, 1}, Kind::cond}, x234, x4}, [](V in) { return where(in[0], in[1], in[2]); }},
      {"gather", {{{2, 3, 5}}, {{2, 3, 4}, Kind::ids, 5}}, [](V in) { return gather(in[0], in[1]); }},
  };
}

std::vector<Tensor> make_inputs(const Row& row, uint64_t seed) {
  std::vector<Tensor> inputs;
  for (const Input& spec : row.inputs) {
    Generator gen(seed++);
    Tensor t;
    switch (spec.kind) {
      case Kind::normal: t = Tensor::randn(spec.shape, gen); break;
      case Kind::positive: t = Tensor::rand(spec.shape, gen, 0.5f, 2.5f); break;
      case Kind::away0: {
        std::vector<float> v = Tensor::randn(spec.shape, gen).to_vector();
        for (float& x : v) x += x < 0 ? -0.1f : 0.1f;
        t = Tensor::from_vector(v, spec.shape);
        break;
      }
      case Kind::cond: {
        std::vector<float> v = Tensor::rand(spec.shape, gen).to_vector();
        for (float& x : v) x = x < 0.5f ? 0.f : 1.f;
        t = Tensor::from_vector(v, spec.shape);
        break;
      }
      case Kind::ids: {
        std::vector<float> v = Tensor::rand(spec.shape, gen).to_vector();
        std::vector<int32_t> ids;
        for (float x : v) ids.push_back(std::min(spec.hi - 1, static_cast<int32_t>(x * spec.hi)));
        t = Tensor::from_vector(ids, spec.shape);
        break;
      }
    }
    inputs.push_back(t);
  }
  return inputs;
}

bool takes_grad(const Input& spec) { return spec.kind != Kind::cond && spec.kind != Kind::ids; }

struct Result {
  std::vector<float> out;
  std::vector<std::vector<float>> grads;  // empty for inputs without a gradient
  Shape out_shape;
};

Result run_row(const Row& row, Device device) {
  std::vector<Tensor> inputs = make_inputs(row, 100);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = inputs[i].to(device);
    if (takes_grad(row.inputs[i])) inputs[i].set_requires_grad(true);
  }
  const Tensor out = row.fn(inputs);
  Generator gen(99);
  const Tensor w = Tensor::randn(out.shape(), gen).to(device);
  out.backward(w);
  Result r;
  r.out = out.to(Device::cpu()).to_vector();
  r.out_shape = out.shape();
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!takes_grad(row.inputs[i])) {
      r.grads.emplace_back();
      continue;
    }
    const Tensor g = inputs[i].grad();
    REQUIRE(g.defined());
    REQUIRE(g.shape() == inputs[i].shape());
    r.grads.push_back(g.to(Device::cpu()).to_vector());
  }
  return r;
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

TEST_CASE("every op runs forward and backward on the CPU", "[op_table]") {
  for (const Row& row : table()) {
    INFO("op " << row.name);
    const Result r = run_row(row, Device::cpu());
    CHECK(all_finite(r.out));
    for (const auto& g : r.grads) CHECK(all_finite(g));
  }
}

TEST_CASE("every op on every other backend matches the CPU", "[op_table][cuda]") {
  const bool have_cuda = cuda_available();
  for (const Row& row : table()) {
    if (!have_cuda) {
      std::printf("op_table: %s on cuda: skipped, no CUDA GPU\n", row.name.c_str());
      continue;
    }
    INFO("op " << row.name << " on cuda");
    const Result cpu = run_row(row, Device::cpu());
    const Result gpu = run_row(row, Device::cuda(0));
    REQUIRE(gpu.out_shape == cpu.out_shape);
    CHECK(close_ratio(gpu.out, {cpu.out.begin(), cpu.out.end()}, row.rtol, row.rtol * 0.1) <= 1);
    for (std::size_t i = 0; i < cpu.grads.size(); ++i) {
      INFO("gradient of input " << i);
      CHECK(close_ratio(gpu.grads[i], {cpu.grads[i].begin(), cpu.grads[i].end()}, row.rtol, row.rtol * 0.1) <= 1);
    }
  }
  if (!have_cuda) WARN("skipped: no CUDA GPU");
}
