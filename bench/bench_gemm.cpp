// The machine's fp32 GEMM ceiling and lmforge's GEMM against it: GFLOP/s of lmf::cpu::gemm (the
// AVX-512 kernel, or Eigen with LMF_GEMM_EIGEN=1 or without AVX-512, on blocks split across the
// OpenMP threads) and, when libopenblas.so.0 is installed, of OpenBLAS's
// cblas_sgemm (loaded at run time, so building needs no OpenBLAS), at 2048^3 and at the GPT-2 124M
// training shapes for B*T = 256. The best of both at 2048^3 is the ceiling MFU is reported against.
// Usage: bench_gemm [--quick]   (threads from OMP_NUM_THREADS; OpenBLAS from OPENBLAS_NUM_THREADS)
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
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
};

// cblas_sgemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                            int, float, float*, int);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best of `reps` timed runs after one warm-up: the least disturbed run on a shared machine.
template <class F>
double best_gflops(const Shape& s, int reps, F&& run) {
  run();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * s.m * s.n * s.k / best * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int reps = quick ? 2 : 5;
  CblasSgemm cblas = nullptr;
  if (void* lib = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL))
    cblas = reinterpret_cast<CblasSgemm>(dlsym(lib, "cblas_sgemm"));
  const std::vector<Shape> shapes = {
      {"square 2048^3", 2048, 2048, 2048, false, false},
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
  std::printf("threads (OpenMP): %d, OpenBLAS: %s\n", omp_get_max_threads(),
              cblas ? "libopenblas.so.0" : "not installed");
  std::printf("%-38s %12s %12s\n", "shape (M,K)x(K,N)", "lmforge", "OpenBLAS");
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
    std::printf("%-38s %9.1f GF %9s\n", s.name, ours,
                cblas ? (std::to_string(int(blas + 0.5)) + " GF").c_str() : "-");
  }
  std::printf("ceiling (best fp32 GEMM at 2048^3): %.1f GFLOP/s\n", ceiling);
  return 0;
}
