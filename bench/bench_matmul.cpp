// Tensor-core GEMM (kernels/matmul.cu) against cuBLASLt on the same packed bf16 operands, at the
// GPT-2 124M training shapes (B·T = 16384 rows; C = 768, 3C, 4C, V = 50304) and 4096³.
// Prints TFLOP/s of each and the ratio ours / cuBLASLt. Outputs are f32, as training uses them;
// accumulation fp32. cuBLASLt runs with its descriptors and algorithm cached per shape (built by
// the warm-up call, as in a training run), so each timed call is one cublasLtMatmul.
// Usage: bench_matmul [iterations]
#include <cuda_runtime.h>

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
  const std::vector<Shape> shapes = {
      {"qkv      (BT,C)x(3C,C)", 16384, 2304, 768},  {"attn proj(BT,C)x(C,C)", 16384, 768, 768},
      {"fc       (BT,C)x(4C,C)", 16384, 3072, 768},  {"fc proj  (BT,4C)x(C,4C)", 16384, 768, 3072},
      {"lm head  (BT,C)x(V,C)", 16384, 50304, 768},  {"square   4096^3", 4096, 4096, 4096},
  };
  std::printf("%-26s %10s %10s %10s %8s %10s\n", "shape (M x N x K)", "ours ms", "ours TF/s", "cublas TF/s",
              "ratio", "max|diff|");
  for (const Shape& s : shapes) {
    // Operands already in the packed layout (rows padded to 128, K to 32; these shapes need none).
    const int64_t mp = (s.m + 127) / 128 * 128, np = (s.n + 127) / 128 * 128, kp = (s.kk + 31) / 32 * 32;
    k::bf16_t *a = nullptr, *b = nullptr;
    float *c_ours = nullptr, *c_ref = nullptr;
    cudaMalloc(&a, 2 * mp * kp);
    cudaMalloc(&b, 2 * np * kp);
    cudaMalloc(&c_ours, 4 * s.m * s.n);
    cudaMalloc(&c_ref, 4 * s.m * s.n);
    init_kernel<<<1024, 256>>>(a, mp * kp, 1.f);
    init_kernel<<<1024, 256>>>(b, np * kp, 0.05f);
    k::GemmParams p;
    p.a = a, p.b = b;
    p.m = s.m, p.n = s.n, p.k = kp;
    p.lda = kp, p.ldb = kp, p.ldc = s.n;
    p.c_f32 = c_ours;
    const double ours = time_ms(p, k::MatmulBackend::custom, iterations);
    p.c_f32 = c_ref;
    const double ref = time_ms(p, k::MatmulBackend::cublas, iterations);
    // Agreement of the two results (f32 outputs of the same bf16 products).
    std::vector<float> h1(s.m * s.n), h2(s.m * s.n);
    cudaMemcpy(h1.data(), c_ours, 4 * s.m * s.n, cudaMemcpyDeviceToHost);
    cudaMemcpy(h2.data(), c_ref, 4 * s.m * s.n, cudaMemcpyDeviceToHost);
    float worst = 0;
    for (std::size_t i = 0; i < h1.size(); i += 97) {
      const float d = h1[i] - h2[i];
      worst = d > worst ? d : (-d > worst ? -d : worst);
    }
    const double flops = 2.0 * s.m * s.n * s.kk;
    std::printf("%-26s %10.3f %10.1f %10.1f %8.2f %10.4f\n", s.name, ours, flops / ours / 1e9,
                flops / ref / 1e9, ref / ours, worst);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c_ours);
    cudaFree(c_ref);
  }
  const cudaError_t status = cudaDeviceSynchronize();
  if (status != cudaSuccess) {
    std::printf("bench_matmul: CUDA error %s\n", cudaGetErrorString(status));
    return 1;
  }
  return 0;
}
