// Peak matrix rates of known GPUs, so model FLOPs utilisation (MFU) is reported against the rate
// of the precision the products actually run in, without a required logging.peak_gflops.
// Figures are the vendors' dense (no sparsity) datasheet numbers; an unknown GPU gives 0.
#pragma once
#include <string_view>

#include "lmforge/core/device.h"

namespace lmf {

/// The precision a run's matrix products execute in, for picking a peak.
enum class MatmulRate { fp32, tf32, bf16 };

/// One row of the peak table: a substring of the CUDA device name and its dense peaks in TFLOP/s.
struct GpuPeak {
  const char* name_contains;
  double bf16_tflops;  ///< bf16 / fp16 tensor cores, fp32 accumulate, dense
  double tf32_tflops;  ///< tf32 tensor cores, dense
  double fp32_tflops;  ///< plain fp32 (CUDA cores)
};

/// The table, most specific names first (e.g. "H100 PCIe" before "H100"), ending with a null name.
const GpuPeak* gpu_peak_table();

/// Peak FLOP/s of the GPU called `gpu_name` (as cudaGetDeviceProperties or nvidia-smi print it) at
/// `rate`; 0 when the name matches no row.
double gpu_peak_flops(std::string_view gpu_name, MatmulRate rate);

/// Peak FLOP/s of `device` at `rate`: the table entry of a CUDA device's name; 0 for the CPU (whose
/// rate is measured instead, see lmf::cpu_gemm_gflops) and for GPUs not in the table.
double device_peak_flops(Device device, MatmulRate rate);

}  // namespace lmf
