// The GPU peak table behind MFU: names as nvidia-smi prints them resolve to the right part (PCIe
// and SXM differ), the precision picks the column, and unknown names and the CPU give 0.
#include <catch2/catch.hpp>

#include "lmforge/core/device_peak.h"

TEST_CASE("GPU peaks come from the most specific table row", "[core][mfu]") {
  using lmf::MatmulRate;
  CHECK(lmf::gpu_peak_flops("NVIDIA H200", MatmulRate::bf16) == Approx(989.4e12));
  CHECK(lmf::gpu_peak_flops("NVIDIA H100 80GB HBM3", MatmulRate::bf16) == Approx(989.4e12));
  CHECK(lmf::gpu_peak_flops("NVIDIA H100 PCIe", MatmulRate::bf16) == Approx(756e12));
  CHECK(lmf::gpu_peak_flops("NVIDIA GH200 480GB", MatmulRate::bf16) == Approx(989.4e12));
  CHECK(lmf::gpu_peak_flops("NVIDIA A100-SXM4-80GB", MatmulRate::bf16) == Approx(312e12));
  CHECK(lmf::gpu_peak_flops("NVIDIA L40S", MatmulRate::bf16) == Approx(362.1e12));
  CHECK(lmf::gpu_peak_flops("NVIDIA L4", MatmulRate::bf16) == Approx(121e12));
  CHECK(lmf::gpu_peak_flops("NVIDIA H200", MatmulRate::fp32) == Approx(66.9e12));
  CHECK(lmf::gpu_peak_flops("NVIDIA H200", MatmulRate::tf32) == Approx(494.7e12));
  CHECK(lmf::gpu_peak_flops("Some Future GPU", MatmulRate::bf16) == 0.0);
  CHECK(lmf::device_peak_flops(lmf::Device::cpu(), MatmulRate::bf16) == 0.0);
}
