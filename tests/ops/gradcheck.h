// Finite-difference gradient checking and small helpers shared by the op tests. Every backward in
// src/ops/ is pinned by comparing the engine's gradients against central differences of the f32
// forward, so a wrong gradient rule cannot pass silently (test_gradcheck.cpp shows one failing).
//
// Method: out = fn(inputs); loss = sum(out * W) with W a fixed N(0, 1) tensor, so every output
// element contributes with a different weight. The analytic gradient comes from out.backward(W).
// The numeric one perturbs each element of each input that requires grad by +-eps and evaluates
// loss in double (from the f32 outputs), dividing by the perturbation actually representable in f32.
//
// Tolerance: an element passes when |analytic - numeric| <= atol + rtol * |numeric|.
//   Defaults eps = 1e-2, rtol = 1e-2, atol = 1e-3. Why these: f32 rounding of the outputs gives a
//   loss error of about 1e-7 * sum|out * W|, which divided by 2 eps is ~1e-5 for the small shapes
//   used in tests; the truncation error of central differences is eps^2/6 * f''' ~ 2e-5 * f''',
//   a few 1e-4 for the curved ops (softmax, attention, layer_norm). atol = 1e-3 leaves a 5-10x
//   margin over both, while a gradient that is off by a factor of 1.05 or more fails rtol.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lmforge/autograd.h"
#include "lmforge/core/tensor.h"

namespace lmf::test {

struct GradcheckOptions {
  double eps = 1e-2;
  double rtol = 1e-2;
  double atol = 1e-3;
  uint64_t seed = 1234;  // of the loss weights W
};

struct GradcheckResult {
  bool ok = true;
  int64_t checked = 0;       // elements compared
  double max_abs_error = 0;  // largest |analytic - numeric|
  std::string report;        // the first few mismatches, one per line
};

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

/// Checks the gradient of every input with requires_grad set. Inputs must be contiguous f32 CPU
/// tensors that fn reads (it is called many times; it must be deterministic).
inline GradcheckResult gradcheck(const OpFn& fn, const std::vector<Tensor>& inputs,
                                 const GradcheckOptions& options = {}) {
  GradcheckResult result;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) t.impl()->grad.reset();
  Tensor out = fn(inputs);
  Generator gen(options.seed);
  const Tensor weights = Tensor::randn(out.shape(), gen);
  const std::vector<float> w = weights.to_vector();
  out.backward(weights);

  auto loss = [&]() {
    NoGradGuard no_grad;
    const std::vector<float> values = fn(inputs).to_vector();
    double s = 0.0;
    for (std::size_t i = 0; i < values.size(); ++i) s += static_cast<double>(values[i]) * w[i];
    return s;
  };

  int mismatches = 0;
  for (std::size_t which = 0; which < inputs.size(); ++which) {
    const Tensor& input = inputs[which];
    if (!input.defined() || !input.requires_grad()) continue;
    const Tensor grad = input.grad();
    const std::vector<float> analytic =
        grad.defined() ? grad.to_vector() : std::vector<float>(input.numel(), 0.f);
    float* p = input.data<float>();
    for (int64_t j = 0; j < input.numel(); ++j) {
      const float original = p[j];
      const float up = static_cast<float>(original + options.eps);
      const float down = static_cast<float>(original - options.eps);
      p[j] = up;
      const double loss_up = loss();
      p[j] = down;
      const double loss_down = loss();
      p[j] = original;
      const double numeric = (loss_up - loss_down) / (static_cast<double>(up) - down);
      const double error = std::abs(analytic[j] - numeric);
      ++result.checked;
      result.max_abs_error = std::max(result.max_abs_error, error);
      if (error > options.atol + options.rtol * std::abs(numeric)) {
        result.ok = false;
        if (mismatches++ < 8)
          result.report += str("input ", which, " element ", j, ": analytic ", analytic[j],
                               ", numeric ", numeric, "\n");
      }
    }
  }
  return result;
}

/// A contiguous N(0, std) tensor from a fixed seed.
inline Tensor random_tensor(const Shape& shape, uint64_t seed, bool requires_grad = true,
                            float std = 1.f) {
  Generator gen(seed);
  Tensor t = Tensor::randn(shape, gen, 0.f, std);
  t.set_requires_grad(requires_grad);
  return t;
}

/// Largest |actual - expected| / (atol + rtol |expected|); <= 1 means every element is close.
inline double close_ratio(const std::vector<float>& actual, const std::vector<double>& expected,
                          double rtol, double atol) {
  if (actual.size() != expected.size()) return INFINITY;
  double worst = 0.0;
  for (std::size_t i = 0; i < actual.size(); ++i)
    worst = std::max(worst, std::abs(actual[i] - expected[i]) / (atol + rtol * std::abs(expected[i])));
  return worst;
}

inline std::vector<double> to_double(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  return {v.begin(), v.end()};
}

}  // namespace lmf::test
