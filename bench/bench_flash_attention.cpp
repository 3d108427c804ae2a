// Tensor-core flash attention (kernels/flash_attention.cu), causal, bf16, forward and backward, at
// the shapes of bench/attention_torch.py (PyTorch SDPA): B = 8, C = 768, T 1024 and 2048, HS 64 and
// 128, q/k/v (B, NH, T, HS). FLOPs counted as that script does: forward 4·B·NH·T²·HS / 2 (causal),
// backward 2.5x the forward. Times are CUDA-event medians over the iterations after a warm-up.
// Usage: bench_flash_attention [iterations]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels.h"

namespace k = lmf::kernels;

namespace {

__global__ void init_kernel(k::bf16_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t h = (uint32_t(i) ^ seed) * 2654435761u;
    p[i] = __float2bfloat16_rn(float(int(h >> 16) % 2001 - 1000) / 1000.f);
  }
}

template <class F>
double median_ms(F&& f, int iterations) {
  f();  // warm-up: smem opt-in, caches
  std::vector<float> ms(iterations);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < iterations; ++i) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    cudaEventElapsedTime(&ms[i], a, b);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("bench_flash_attention: skipped: no CUDA GPU (%s)\n", cudaGetErrorString(status));
    const char* required = std::getenv("LMF_REQUIRE_GPU");
    return required && required[0] == '1' ? 3 : 0;
  }
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 20;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d), lmforge flash attention bf16\n", prop.name, prop.major, prop.minor);
  std::printf("%-6s %-5s %-4s %-4s %10s %10s %10s %10s\n", "T", "HS", "NH", "B", "fwd ms", "fwd TF/s", "bwd ms",
              "bwd TF/s");
  const int B = 8, C = 768;
  for (int T : {1024, 2048})
    for (int HS : {64, 128}) {
      const int NH = C / HS;
      const int64_t n = int64_t(B) * NH * T * HS;
      k::bf16_t *q, *kk, *v, *o, *dout;
      float *lse, *dq, *dk, *dv, *work;
      const int64_t work_n = k::flash_attention_backward_workspace(B, NH, T, HS);
      cudaMalloc(&q, 2 * n), cudaMalloc(&kk, 2 * n), cudaMalloc(&v, 2 * n), cudaMalloc(&o, 2 * n);
      cudaMalloc(&dout, 2 * n), cudaMalloc(&lse, 4 * int64_t(B) * NH * T);
      cudaMalloc(&dq, 4 * n), cudaMalloc(&dk, 4 * n), cudaMalloc(&dv, 4 * n), cudaMalloc(&work, 4 * work_n);
      init_kernel<<<1024, 256>>>(q, n, 1), init_kernel<<<1024, 256>>>(kk, n, 2);
      init_kernel<<<1024, 256>>>(v, n, 3), init_kernel<<<1024, 256>>>(dout, n, 4);
      k::FlashAttentionParams p;
      p.q = q, p.k = kk, p.v = v, p.o = o, p.lse = lse;
      const int64_t sb = int64_t(NH) * T * HS, sh = int64_t(T) * HS, sr = HS;
      p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.o_batch_stride = sb;
      p.q_head_stride = p.k_head_stride = p.v_head_stride = p.o_head_stride = sh;
      p.q_row_stride = p.k_row_stride = p.v_row_stride = p.o_row_stride = sr;
      p.batch = B, p.heads = NH, p.kv_heads = NH, p.seq = T, p.head_dim = HS, p.scale = 1.f / std::sqrt(float(HS));
      k::FlashAttentionBackwardParams bp;
      bp.fwd = p;
      bp.dout = dout, bp.do_batch_stride = sb, bp.do_head_stride = sh, bp.do_row_stride = sr;
      bp.dq = dq, bp.dk = dk, bp.dv = dv, bp.workspace = work;
      bp.dq_batch_stride = bp.dk_batch_stride = bp.dv_batch_stride = sb;
      bp.dq_head_stride = bp.dk_head_stride = bp.dv_head_stride = sh;
      bp.dq_row_stride = bp.dk_row_stride = bp.dv_row_stride = sr;
      const double fwd = median_ms([&] { k::flash_attention_forward(p, nullptr); }, iterations);
      const double bwd = median_ms([&] { k::flash_attention_backward(bp, nullptr); }, iterations);
      const double flops = 4.0 * B * NH * double(T) * T * HS / 2;
      std::printf("%-6d %-5d %-4d %-4d %10.3f %10.2f %10.3f %10.2f\n", T, HS, NH, B, fwd, flops / fwd / 1e9, bwd,
                  2.5 * flops / bwd / 1e9);
      for (void* ptr : {(void*)q, (void*)kk, (void*)v, (void*)o, (void*)dout, (void*)lse, (void*)dq, (void*)dk,
                        (void*)dv, (void*)work})
        cudaFree(ptr);
    }
  const cudaError_t end = cudaDeviceSynchronize();
  if (end != cudaSuccess) {
    std::printf("bench_flash_attention: CUDA error %s\n", cudaGetErrorString(end));
    return 1;
  }
  return 0;
}
