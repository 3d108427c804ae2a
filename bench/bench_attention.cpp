// Flash attention forward + backward (kernels/attention.cu), causal, at T = 1024 and 2048 and
// HS = 64 and 128 (B = 8, C = 768 heads split as NH = C / HS). Prints milliseconds and TFLOP/s
// (causal: half the dense FLOPs; backward counted as 2.5x the forward). Compare with PyTorch SDPA
// via bench/attention_torch.py on the same shapes.
// Usage: bench_attention [iterations]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "kernels.h"

namespace k = lmf::kernels;

namespace {

__global__ void init_kernel(float* p, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = static_cast<float>(static_cast<int>((i * 2654435761u) % 2001) - 1000) / 1000.f;
}

float elapsed(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("bench_attention: skipped: no CUDA GPU\n");
    return 0;
  }
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 10;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  std::printf("%-6s %-5s %-4s %-4s %10s %10s %10s %10s\n", "T", "HS", "NH", "B", "fwd ms", "fwd TF/s", "bwd ms",
              "bwd TF/s");
  const int64_t B = 8, C = 768;
  for (int64_t t : {1024, 2048})
    for (int64_t hs : {64, 128}) {
      const int64_t nh = C / hs, bh = B * nh, n = bh * t * hs;
      float *q, *kk, *v, *out, *lse, *dout, *dq, *dk, *dv, *work;
      for (float** p : {&q, &kk, &v, &out, &dout, &dq, &dk, &dv}) cudaMalloc(p, sizeof(float) * n);
      cudaMalloc(&lse, sizeof(float) * bh * t);
      cudaMalloc(&work, sizeof(float) * k::attention_backward_workspace(bh, t));
      for (float* p : {q, kk, v, dout}) init_kernel<<<1024, 256>>>(p, n);
      cudaEvent_t e0, e1, e2;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      cudaEventCreate(&e2);
      k::attention_forward(out, lse, q, kk, v, B, nh, nh, t, t, hs, nullptr);  // warm-up
      k::attention_backward(dq, dk, dv, dout, out, q, kk, v, lse, bh, t, hs, work, nullptr);
      float fwd = 0, bwd = 0;
      for (int i = 0; i < iterations; ++i) {
        cudaEventRecord(e0);
        k::attention_forward(out, lse, q, kk, v, B, nh, nh, t, t, hs, nullptr);
        cudaEventRecord(e1);
        k::attention_backward(dq, dk, dv, dout, out, q, kk, v, lse, bh, t, hs, work, nullptr);
        cudaEventRecord(e2);
        cudaEventSynchronize(e2);
        fwd += elapsed(e0, e1);
        bwd += elapsed(e1, e2);
      }
      fwd /= iterations;
      bwd /= iterations;
      const double flops = 4.0 * bh * t * t * hs / 2;  // causal forward
      std::printf("%-6lld %-5lld %-4lld %-4lld %10.3f %10.2f %10.3f %10.2f\n", (long long)t, (long long)hs,
                  (long long)nh, (long long)B, fwd, flops / fwd / 1e9, bwd, 2.5 * flops / bwd / 1e9);
      for (float* p : {q, kk, v, out, lse, dout, dq, dk, dv, work}) cudaFree(p);
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      cudaEventDestroy(e2);
    }
  const cudaError_t status = cudaDeviceSynchronize();
  if (status != cudaSuccess) {
    std::printf("bench_attention: CUDA error %s\n", cudaGetErrorString(status));
    return 1;
  }
  return 0;
}
