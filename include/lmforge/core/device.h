// Where a tensor's storage lives. A build with CUDA still runs on a machine without a GPU; asking
// for a CUDA device there is a clear lmf::Error.
#pragma once
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

}  // namespace lmf
