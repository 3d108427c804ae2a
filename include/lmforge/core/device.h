// Where a tensor's storage lives. A build with CUDA still runs on a machine without a GPU; asking
// for a CUDA device there is a clear lmf::Error.
#pragma once
#include <cstdint>
#include <string>

namespace lmf {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device& other) const = default;
  /// "cpu" or "cuda:N".
  std::string str() const;
};

/// Parses "cpu", "cuda" or "cuda:N"; throws lmf::Error for anything else.
Device parse_device(const std::string& text);
/// True when this build has CUDA and a GPU is visible.
bool cuda_available();
/// Number of visible GPUs (0 without CUDA).
int cuda_device_count();
/// How many times this process has made the host wait for a GPU: copies between GPU and host
/// memory (lmf::copy_bytes, so Tensor::to, item and to_vector), the CUDA id checks' read-back and
/// the NCCL communicator's host waits. A test hook: a training step that reads a value back, or
/// waits for the device, shows up here. Thread-safe; never reset.
int64_t cuda_host_syncs();
namespace detail {
/// Counts one host wait for cuda_host_syncs() (the places that wait outside copy_bytes).
void count_cuda_host_sync();
}  // namespace detail

}  // namespace lmf
