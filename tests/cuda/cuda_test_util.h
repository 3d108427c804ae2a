// Helpers of the CUDA tests: skip with a printed reason when no GPU is visible, device buffers that
// start poisoned (all bits set: NaN for f32) so an element a kernel forgot to write fails the
// comparison, and tolerances derived from the error of the same computation in bf16.
#pragma once
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/check.h"
#include "kernels.h"
#include "lmforge/core/device.h"
#include "lmforge/core/dtype.h"
#include "lmforge/core/rng.h"

/// Ends the test successfully, with the reason printed, on a machine without a GPU. With
/// LMF_REQUIRE_GPU=1 in the environment (the GPU check bundle sets it) a missing GPU fails the
/// test instead, naming cudaGetDeviceCount's error: on a GPU machine a skip hides a broken setup.
#define LMF_SKIP_WITHOUT_GPU()                                        \
  do {                                                                \
    if (!lmf::cuda_available()) {                                     \
      const std::string lmf_why = lmf::test::no_gpu_reason();         \
      if (lmf::test::gpu_required()) FAIL("LMF_REQUIRE_GPU=1 but " << lmf_why); \
      std::printf("skipped: %s\n", lmf_why.c_str());                  \
      WARN("skipped: " << lmf_why);                                   \
      return;                                                         \
    }                                                                 \
  } while (0)

namespace lmf::test {

inline bool gpu_required() {
  const char* v = std::getenv("LMF_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

/// Why no GPU is usable: cudaGetDeviceCount's error (a driver/runtime mismatch, no driver) is
/// reported as such, not as "no GPU".
inline std::string no_gpu_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  cudaGetLastError();
  if (status != cudaSuccess)
    return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
  return "no CUDA GPU (cudaGetDeviceCount = " + std::to_string(count) + ")";
}

/// A device array of T, filled with 0xFF bytes (NaN for floats) until a kernel writes it.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    REQUIRE(cudaMalloc(&ptr_, bytes()) == cudaSuccess);
    poison();
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return static_cast<T*>(ptr_); }
  std::size_t size() const { return n_; }
  void poison() { REQUIRE(cudaMemset(ptr_, 0xFF, bytes()) == cudaSuccess); }
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == n_);
    REQUIRE(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    REQUIRE(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost) == cudaSuccess);
    return host;
  }

 private:
  std::size_t bytes() const { return std::max<std::size_t>(1, n_ * sizeof(T)); }
  void* ptr_ = nullptr;
  std::size_t n_;
};

/// Normal(0, scale) draws; each call site passes its own seed so inputs are fresh per test.
inline std::vector<float> random_vector(std::size_t n, uint64_t seed, float scale = 1.f) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * philox_normal(seed, i);
  return v;
}

inline std::vector<float> round_bf16(std::vector<float> v) {
  for (float& x : v) x = static_cast<float>(bf16(x));
  return v;
}

/// Max |a - b|; infinite when any element is NaN (a poisoned, unwritten output).
inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
    if (std::isnan(a[i])) continue;
    worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
  }
  return worst;
}

inline double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, std::fabs(double(x)));
  return m;
}

/// The error budget of a computation done in bf16: the distance between the reference result and
/// the same CPU computation on bf16-rounded inputs with a bf16-rounded output. Floored at a few
/// f32 ulps of the result's magnitude so exact-in-bf16 cases (all-zero outputs) stay meaningful.
inline double bf16_error(const std::vector<float>& reference, const std::vector<float>& from_bf16_inputs) {
  const double err = max_abs_diff(reference, round_bf16(from_bf16_inputs));
  return std::max(err, 1e-6 * std::max(1.0, max_abs(reference)));
}

}  // namespace lmf::test
