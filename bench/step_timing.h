// What the CPU training-step benchmarks share: a fixed random batch, the timing loop (a warm-up
// step, then wall and process CPU time per step) and the result line, so bench_gpt2_step and
// bench_llama_step report the same numbers the same way.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <random>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmf::bench {

/// (B, T) input ids and their next-token targets drawn uniformly from [0, vocab), seed 42.
struct StepBatch {
  Tensor ids, targets;
};
inline StepBatch random_step_batch(int64_t vocab, int64_t B, int64_t T) {
  std::mt19937 gen(42);
  std::uniform_int_distribution<int32_t> token(0, int32_t(vocab - 1));
  std::vector<int32_t> data(static_cast<std::size_t>(B * T + 1));
  for (int32_t& t : data) t = token(gen);
  return {Tensor::from_vector(std::vector<int32_t>(data.begin(), data.end() - 1), {B, T}),
          Tensor::from_vector(std::vector<int32_t>(data.begin() + 1, data.end()), {B, T})};
}

struct StepTimes {
  double median = 0, best = 0;  ///< wall seconds per step
  double cpu_median = 0;        ///< process CPU seconds per step (with one thread: the work itself)
};

/// Runs `step` steps + 1 times; the first warms the allocator caches and is not timed.
inline StepTimes time_steps(int64_t steps, const std::function<void()>& step) {
  std::vector<double> times, cpu_times;
  for (int64_t s = 0; s <= steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    step();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) times.push_back(dt), cpu_times.push_back(double(std::clock() - c0) / CLOCKS_PER_SEC);
  }
  std::sort(times.begin(), times.end());
  std::sort(cpu_times.begin(), cpu_times.end());
  return {times[times.size() / 2], times.front(), cpu_times[cpu_times.size() / 2]};
}

/// "step: median … ms, best …; tokens/s; GFLOP/s[; MFU]; cpu …; loss …", FLOPs per token given.
inline void print_step_line(const StepTimes& t, int64_t steps, int64_t tokens_per_step, double flops_per_token,
                            double ceiling, float loss) {
  const double gflops = flops_per_token * double(tokens_per_step) / t.median * 1e-9;
  std::printf("step: median %.1f ms, best %.1f ms over %lld steps; %.0f tokens/s; %.1f GFLOP/s", t.median * 1e3,
              t.best * 1e3, (long long)steps, double(tokens_per_step) / t.median, gflops);
  if (ceiling > 0) std::printf("; MFU %.1f%% of %.0f GFLOP/s", 100.0 * gflops / ceiling, ceiling);
  std::printf("; cpu %.1f ms/step; loss %.4f\n", t.cpu_median * 1e3, loss);
}

}  // namespace lmf::bench
