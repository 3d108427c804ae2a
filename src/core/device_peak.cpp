// The GPU peak table behind MFU. Matching is by substring of the device name, most specific row
// first, so an H100 PCIe (756 TFLOP/s bf16) is not credited with the SXM part's 989.
#include "lmforge/core/device_peak.h"

#ifdef LMF_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace lmf {
namespace {

// Dense datasheet peaks in TFLOP/s: bf16 (fp32 accumulate), tf32, plain fp32.
constexpr GpuPeak kTable[] = {
    {"GH200", 989.4, 494.7, 66.9},
    {"H200 NVL", 835.6, 417.8, 60.0},
    {"H200", 989.4, 494.7, 66.9},      // SXM
    {"H100 PCIe", 756.0, 378.0, 51.2},
    {"H100 NVL", 835.6, 417.8, 60.0},
    {"H100", 989.4, 494.7, 66.9},      // SXM ("NVIDIA H100 80GB HBM3")
    {"H800", 989.4, 494.7, 66.9},
    {"A100", 312.0, 156.0, 19.5},
    {"A800", 312.0, 156.0, 19.5},
    {"L40S", 362.1, 183.2, 91.6},
    {"L40", 181.0, 90.5, 90.5},
    {"L4", 121.0, 60.0, 30.3},
    {"A10", 125.0, 62.5, 31.2},
    {"RTX 4090", 165.2, 82.6, 82.6},
    {"RTX 3090", 71.0, 35.6, 35.6},
    {nullptr, 0, 0, 0},
};

}  // namespace

const GpuPeak* gpu_peak_table() { return kTable; }

double gpu_peak_flops(std::string_view gpu_name, MatmulRate rate) {
  for (const GpuPeak* row = kTable; row->name_contains != nullptr; ++row) {
    if (gpu_name.find(row->name_contains) == std::string_view::npos) continue;
    const double tflops = rate == MatmulRate::bf16 ? row->bf16_tflops
                          : rate == MatmulRate::tf32 ? row->tf32_tflops
                                                     : row->fp32_tflops;
    return tflops * 1e12;
  }
  return 0.0;
}

double device_peak_flops(Device device, MatmulRate rate) {
  if (!device.is_cuda()) return 0.0;
#ifdef LMF_WITH_CUDA
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device.index) != cudaSuccess) {
    cudaGetLastError();
    return 0.0;
  }
  return gpu_peak_flops(prop.name, rate);
#else
  return 0.0;
#endif
}

}  // namespace lmf
