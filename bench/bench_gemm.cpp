// The machine's fp32 GEMM ceiling and lmforge's GEMM against it: GFLOP/s of lmf::cpu::gemm (the
// AVX-512 kernel, or Eigen with LMF_GEMM_EIGEN=1 or without AVX-512, on blocks split across the
// OpenMP threads) and, when libopenblas.so.0 is installed, of OpenBLAS's
// cblas_sgemm (loaded at run time, so building needs no OpenBLAS), at 2048^3 and at the GPT-2 124M
// training shapes for B*T = 256. The best of both at 2048^3 is the ceiling MFU is reported against.
// Usage: bench_gemm [--quick] [--shapes gpt2] [--ceiling-only] [--cpu-time]
//   (threads from OMP_NUM_THREADS; OpenBLAS from OPENBLAS_NUM_THREADS)
// --shapes gpt2: every product of one GPT-2 124M training step at B*T = 256 (each linear's forward,
// dX and dW, the tied head's three), with how many times a step runs it and the share of the step's
// product FLOPs it carries. --cpu-time: process CPU time instead of wall time, the fair clock for a
// one-thread run on a machine other processes share (with more threads it counts spinning too).
// --ceiling-only: the 2048^3 product alone (a few seconds), for pairing a ceiling with each timed
// training step (bench/cpu_vs_torch's MFU rounds).
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace {

struct Shape {
  const char* name;
  int64_t m, n, k;
  bool trans_a, trans_b;
  int per_step = 0;  // times one GPT-2 124M step (B*T = 256) runs it; 0: not a step's product
};

// cblas_sgemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                            int, float, float*, int);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

bool g_cpu_time = false;

double clock_seconds() {
  if (g_cpu_time) {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of `reps` timed runs after one warm-up: the least disturbed run on a shared machine. Small
// products are repeated within a run so each timing covers ~0.1 GFLOP or more.
template <class F>
double best_gflops(const Shape& s, int reps, F&& run) {
  const double flops = 2.0 * s.m * s.n * s.k;
  const int inner = std::max(1, int(1e8 / flops));
  run();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = clock_seconds();
    for (int i = 0; i < inner; ++i) run();
    best = std::min(best, (clock_seconds() - t0) / inner);
  }
  return flops / best * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, gpt2 = false, ceiling_only = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--cpu-time")) g_cpu_time = true;
    else if (!std::strcmp(argv[i], "--ceiling-only")) ceiling_only = true;
    else if (!std::strcmp(argv[i], "--shapes") && i + 1 < argc && !std::strcmp(argv[i + 1], "gpt2")) gpt2 = true, ++i;
    else { std::fprintf(stderr, "usage: bench_gemm [--quick] [--shapes gpt2] [--ceiling-only] [--cpu-time]\n"); return 2; }
  }
  const int reps = quick ? 2 : 5;
  CblasSgemm cblas = nullptr;
  if (void* lib = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL))
    cblas = reinterpret_cast<CblasSgemm>(dlsym(lib, "cblas_sgemm"));
  const Shape square = {"square 2048^3", 2048, 2048, 2048, false, false};  // the ceiling
  // One GPT-2 124M step at B*T = 256 (C = 768, V = 50257, 12 layers): a linear y = x W^T + b runs
  // y = x . W^T (N, K trans_b), dX = dY . W (no transposes) and dW = dY^T . x (trans_a).
  const std::vector<Shape> gpt2_shapes = {
      square,
      {"qkv fwd (256,768)x(768,2304)", 256, 2304, 768, false, true, 12},
      {"qkv dx (256,2304)x(2304,768)", 256, 768, 2304, false, false, 12},
      {"qkv dw (2304,256)x(256,768)", 2304, 768, 256, true, false, 12},
      {"attn proj fwd (256,768)x(768,768)", 256, 768, 768, false, true, 12},
      {"attn proj dx (256,768)x(768,768)", 256, 768, 768, false, false, 12},
      {"attn proj dw (768,256)x(256,768)", 768, 768, 256, true, false, 12},
      {"mlp fc fwd (256,768)x(768,3072)", 256, 3072, 768, false, true, 12},
      {"mlp fc dx (256,3072)x(3072,768)", 256, 768, 3072, false, false, 12},
      {"mlp fc dw (3072,256)x(256,768)", 3072, 768, 256, true, false, 12},
      {"mlp proj fwd (256,3072)x(3072,768)", 256, 768, 3072, false, true, 12},
      {"mlp proj dx (256,768)x(768,3072)", 256, 3072, 768, false, false, 12},
      {"mlp proj dw (768,256)x(256,3072)", 768, 3072, 256, true, false, 12},
      {"lm head fwd (256,768)x(768,50257)", 256, 50257, 768, false, true, 1},
      {"lm head dx (256,50257)x(50257,768)", 256, 768, 50257, false, false, 1},
      {"lm head dw (50257,256)x(256,768)", 50257, 768, 256, true, false, 1},
  };
  const std::vector<Shape> default_shapes = {
      square,
      {"qkv fwd (256,768)x(768,2304)", 256, 2304, 768, false, true},
      {"attn proj fwd (256,768)x(768,768)", 256, 768, 768, false, true},
      {"mlp fc fwd (256,768)x(768,3072)", 256, 3072, 768, false, true},
      {"mlp proj fwd (256,3072)x(3072,768)", 256, 768, 3072, false, true},
      {"mlp fc dw (3072,256)x(256,768)", 3072, 768, 256, true, false},
      {"lm head fwd (256,768)x(768,50257)", 256, 50257, 768, false, true},
      {"lm head dx (256,50257)x(50257,768)", 256, 768, 50257, false, false},
      {"lm head dw (50257,256)x(256,768)", 50257, 768, 256, true, false},
      {"small fc fwd (768,128)x(128,512)", 768, 512, 128, false, true},
  };
  const std::vector<Shape> square_only = {square};
  const std::vector<Shape>& shapes = ceiling_only ? square_only : gpt2 ? gpt2_shapes : default_shapes;
  double step_flops = 0.0;
  for (const Shape& s : shapes) step_flops += 2.0 * s.m * s.n * s.k * s.per_step;
  std::printf("threads (OpenMP): %d, OpenBLAS: %s, clock: %s\n", omp_get_max_threads(),
              cblas ? "libopenblas.so.0" : "not installed", g_cpu_time ? "process CPU time" : "wall");
  std::printf("%-38s %12s %12s%s\n", "shape (M,K)x(K,N)", "lmforge", "OpenBLAS", gpt2 ? "  per step, FLOP share" : "");
  double ours_s = 0.0, blas_s = 0.0;
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  double ceiling = 0.0;
  for (const Shape& s : shapes) {
    std::vector<float> a(s.m * s.k), b(s.k * s.n), c(s.m * s.n);
    for (float& x : a) x = dist(gen);
    for (float& x : b) x = dist(gen);
    const double ours = best_gflops(s, reps, [&] {
      lmf::cpu::gemm(a.data(), b.data(), c.data(), s.m, s.n, s.k, s.trans_a, s.trans_b);
    });
    double blas = 0.0;
    if (cblas) {
      blas = best_gflops(s, reps, [&] {
        cblas(kRowMajor, s.trans_a ? kTrans : kNoTrans, s.trans_b ? kTrans : kNoTrans, int(s.m),
              int(s.n), int(s.k), 1.f, a.data(), int(s.trans_a ? s.m : s.k), b.data(),
              int(s.trans_b ? s.k : s.n), 0.f, c.data(), int(s.n));
      });
    }
    if (s.m == 2048) ceiling = std::max(ours, blas);
    const double flops = 2.0 * s.m * s.n * s.k * s.per_step;
    ours_s += flops / (ours * 1e9);
    if (cblas) blas_s += flops / (blas * 1e9);
    std::printf("%-38s %9.1f GF %9s", s.name, ours, cblas ? (std::to_string(int(blas + 0.5)) + " GF").c_str() : "-");
    if (s.per_step) std::printf("  x%-2d %5.1f %%", s.per_step, 100.0 * flops / step_flops);
    std::printf("\n");
  }
  if (step_flops > 0) {  // the step's products at these rates, as one rate
    std::printf("all products of a step (%.1f GFLOP): lmforge %.1f GF/s (%.1f ms)", step_flops * 1e-9,
                step_flops / ours_s * 1e-9, ours_s * 1e3);
    if (cblas) std::printf(", OpenBLAS %.1f GF/s (%.1f ms)", step_flops / blas_s * 1e-9, blas_s * 1e3);
    std::printf("\n");
  }
  std::printf("ceiling (best fp32 GEMM at 2048^3): %.1f GFLOP/s\n", ceiling);
  return 0;
}
