// Names and sizes of dtypes and devices, and the CUDA availability query (which answers false in
// a build without CUDA, so callers need no #ifdefs).
#include "lmforge/core/device.h"

#include <atomic>

#include "lmforge/core/dtype.h"
#include "lmforge/core/error.h"

#ifdef LMF_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace lmf {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::u16: return 2;
  }
  throw Error("unknown dtype");
}

std::string dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::u16: return "u16";
  }
  throw Error("unknown dtype");
}

DType parse_dtype(const std::string& name) {
  if (name == "f32") return DType::f32;
  if (name == "bf16") return DType::bf16;
  if (name == "i32") return DType::i32;
  if (name == "u16") return DType::u16;
  throw Error(str("unknown dtype '", name, "' (expected f32, bf16, i32 or u16)"));
}

std::string Device::str() const { return is_cpu() ? "cpu" : lmf::str("cuda:", index); }

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string digits = text.substr(5);
    LMF_CHECK(!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos,
              "invalid device '", text, "' (expected cpu, cuda or cuda:N)");
    return Device::cuda(std::stoi(digits));
  }
  throw Error(str("invalid device '", text, "' (expected cpu, cuda or cuda:N)"));
}

int cuda_device_count() {
#ifdef LMF_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

bool cuda_available() { return cuda_device_count() > 0; }

namespace {
std::atomic<int64_t> g_cuda_host_syncs{0};
}
int64_t cuda_host_syncs() { return g_cuda_host_syncs.load(std::memory_order_relaxed); }
void detail::count_cuda_host_sync() { g_cuda_host_syncs.fetch_add(1, std::memory_order_relaxed); }

}  // namespace lmf
