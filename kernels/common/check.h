// LMF_CUDA_CHECK(call) and LMF_CUDA_LAUNCH_CHECK(): every CUDA runtime call and launch is checked,
// and a failure names file, line and the call. Plain host C++, so the host glue can include it.
// Kernels include nothing of lmforge, so the error is std::runtime_error's CudaError, not lmf::Error.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace lmf::kernels {

/// Thrown by LMF_CUDA_CHECK; derives from std::runtime_error like lmf::Error, so callers that
/// catch std::exception (the CLI, tests) report it as one line.
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void cuda_fail(cudaError_t status, const char* call, const char* file, int line) {
  throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                  cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

}  // namespace lmf::kernels

/// Checks a CUDA runtime call; throws lmf::kernels::CudaError naming file, line and the call.
#define LMF_CUDA_CHECK(call)                                                          \
  do {                                                                                \
    const cudaError_t lmf_status_ = (call);                                           \
    if (lmf_status_ != cudaSuccess) ::lmf::kernels::cuda_fail(lmf_status_, #call, __FILE__, __LINE__); \
  } while (0)

/// Checks the launch that just happened (bad configuration, missing kernel image).
#define LMF_CUDA_LAUNCH_CHECK() LMF_CUDA_CHECK(cudaGetLastError())
