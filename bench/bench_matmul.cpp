// The GEMMs of kernels/ against cuBLASLt on the same packed bf16 operands, in one run: the mma.sync
// kernel (matmul.cu), the Hopper TMA + wgmma kernel (matmul_sm90.cu; "n/a" where the device is not
// sm_90 or the build has no 90a) and cuBLASLt, at the GPT-2 124M training shapes (B·T = 16384
// rows; C = 768, 3C, 4C, V = 50304; the forward products and both backward ones) and 4096³.
// Prints ms and TFLOP/s of each, each kernel as % of cuBLASLt, and the largest difference from
// cuBLASLt's result. Outputs are f32, as training uses them; accumulation fp32. cuBLASLt runs
// with its descriptors and algorithm cached per shape (built by the warm-up call, as in a
// training run), so each timed call is one cublasLtMatmul.
// Usage: bench_matmul [iterations]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels.h"

namespace k = lmf::kernels;

namespace {

struct Shape {
  const char* name;
  int64_t m, n, kk;
};

// Fills a bf16 buffer with small values derived from the index (the values do not affect speed).
__global__ void init_kernel(k::bf16_t* p, int64_t n, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16_rn(scale * static_cast<float>(static_cast<int>((i * 2654435761u) % 2001) - 1000) / 1000.f);
}

double time_ms(const k::GemmParams& p, k::MatmulBackend backend, int iterations) {
  k::gemm(p, backend, nullptr);  // warm-up (and cuBLASLt handle creation)
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start);
  for (int i = 0; i < iterations; ++i) k::gemm(p, backend, nullptr);
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / iterations;
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t found = cudaGetDeviceCount(&devices);
  if (found != cudaSuccess || devices == 0) {
    std::printf("bench_matmul: skipped: no CUDA GPU (%s)\n", cudaGetErrorString(found));
    const char* required = std::getenv("LMF_REQUIRE_GPU");
    return required && required[0] == '1' ? 3 : 0;
  }
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 20;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  const bool have_wgmma = k::gemm_wgmma_available();
  std::printf("wgmma kernel: %s\n", have_wgmma ? "available" : "not available (not sm_90, or built without 90a)");
  // (M, N, K) of c = a · bᵀ as the training step runs them, B·T = 16384: forward x · Wᵀ, backward
  // dx = dy · W (K = the layer's outputs) and dW = dyᵀ · x (K = B·T).
  const std::vector<Shape> shapes = {
      {"qkv      fwd", 16384, 2304, 768},  {"attn prj fwd", 16384, 768, 768},
      {"fc       fwd", 16384, 3072, 768},  {"fc prj   fwd", 16384, 768, 3072},
      {"lm head  fwd", 16384, 50304, 768}, {"qkv      dx", 16384, 768, 2304},
      {"fc       dx", 16384, 768, 3072},   {"fc prj   dx", 16384, 3072, 768},
      {"lm head  dx", 16384, 768, 50304},  {"qkv      dW", 2304, 768, 16384},
      {"fc       dW", 3072, 768, 16384},   {"lm head  dW", 50304, 768, 16384},
      {"square 4096^3", 4096, 4096, 4096},
  };
  std::printf("%-14s %7s %7s %7s | %8s %8s %8s | %6s %6s | %9s %9s\n", "shape", "M", "N", "K", "mma TF/s",
              "wgmma", "cublas", "mma %", "wgmma%", "|mma-cb|", "|wg-cb|");
  double total[3] = {0, 0, 0};  // ms per shape summed: mma, wgmma, cublas
  for (const Shape& s : shapes) {
    // Operands already in the packed layout (rows padded to 128, K to 32; these shapes need none).
    const int64_t mp = (s.m + 127) / 128 * 128, np = (s.n + 127) / 128 * 128, kp = (s.kk + 31) / 32 * 32;
    k::bf16_t *a = nullptr, *b = nullptr;
    float *c[3] = {nullptr, nullptr, nullptr};
    cudaMalloc(&a, 2 * mp * kp);
    cudaMalloc(&b, 2 * np * kp);
    for (float*& ci : c) cudaMalloc(&ci, 4 * s.m * s.n);
    init_kernel<<<1024, 256>>>(a, mp * kp, 1.f);
    init_kernel<<<1024, 256>>>(b, np * kp, 0.05f);
    k::GemmParams p;
    p.a = a, p.b = b;
    p.m = s.m, p.n = s.n, p.k = kp;
    p.lda = kp, p.ldb = kp, p.ldc = s.n;
    const k::MatmulBackend backends[3] = {k::MatmulBackend::custom, k::MatmulBackend::wgmma, k::MatmulBackend::cublas};
    double ms[3] = {0, 0, 0};
    for (int i = 0; i < 3; ++i) {
      if (i == 1 && !have_wgmma) continue;
      p.c_f32 = c[i];
      ms[i] = time_ms(p, backends[i], iterations);
      total[i] += ms[i];
    }
    // Agreement with cuBLASLt (f32 outputs of the same bf16 products), on a sample of elements.
    std::vector<float> ref(s.m * s.n), h(s.m * s.n);
    cudaMemcpy(ref.data(), c[2], 4 * s.m * s.n, cudaMemcpyDeviceToHost);
    double worst[2] = {0, 0};
    for (int i = 0; i < 2; ++i) {
      if (ms[i] == 0) continue;
      cudaMemcpy(h.data(), c[i], 4 * s.m * s.n, cudaMemcpyDeviceToHost);
      for (std::size_t j = 0; j < h.size(); j += 97) worst[i] = std::max(worst[i], double(std::fabs(h[j] - ref[j])));
    }
    const double flops = 2.0 * s.m * s.n * s.kk;
    auto tf = [&](double t) { return t > 0 ? flops / t / 1e9 : 0.0; };
    auto pct = [&](double t) { return t > 0 ? 100.0 * ms[2] / t : 0.0; };
    std::printf("%-14s %7lld %7lld %7lld | %8.1f %8.1f %8.1f | %6.1f %6.1f | %9.2e %9.2e\n", s.name,
                static_cast<long long>(s.m), static_cast<long long>(s.n), static_cast<long long>(s.kk), tf(ms[0]),
                tf(ms[1]), tf(ms[2]), pct(ms[0]), pct(ms[1]), worst[0], worst[1]);
    cudaFree(a);
    cudaFree(b);
    for (float* ci : c) cudaFree(ci);
  }
  std::printf("all shapes, time-weighted: mma %.1f %% of cuBLASLt, wgmma %s%.1f %% of cuBLASLt\n",
              100.0 * total[2] / total[0], have_wgmma ? "" : "(not run) ", have_wgmma ? 100.0 * total[2] / total[1] : 0.0);
  const cudaError_t status = cudaDeviceSynchronize();
  if (status != cudaSuccess) {
    std::printf("bench_matmul: CUDA error %s\n", cudaGetErrorString(status));
    return 1;
  }
  return 0;
}
