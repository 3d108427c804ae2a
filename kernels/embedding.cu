// Embedding lookup out (N, C) = weight (V, C)[ids (N)] and its deterministic backward, plus the id
// validation the op layer runs before either (a bad id must be an error, never a wild read).
// Gradient: dweight[v] = sum of dout rows whose id is v (written, zero rows for unused ids; or
// added to each row's existing gradient when accumulating into a parameter's).
// Float atomics would add a popular token's rows in a different order each run, so instead the
// (id, position) pairs are stably radix-sorted (CUB), and the first position of each run of equal
// ids owns that row: its block sums the run's dout rows in position order. Same bits every run.
#include <cub/device/device_radix_sort.cuh>

#include "common/common.cuh"
#include "kernels.h"

namespace lmf::kernels {
namespace {

constexpr int kThreads = 256;

template <class Id>
__global__ void find_invalid_kernel(unsigned long long* first_bad, const Id* ids, int64_t n, int64_t v,
                                    long long allowed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const long long id = static_cast<long long>(ids[i]);
    if ((id < 0 || id >= v) && id != allowed) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

__global__ void set_scalar_kernel(unsigned long long* p, unsigned long long value) { *p = value; }

// One block per row: lanes copy consecutive channels (coalesced).
template <class Id>
__global__ void embedding_forward_kernel(float* out, const float* weight, const Id* ids, int64_t c) {
  const int64_t row = blockIdx.x;
  const float* src = weight + static_cast<int64_t>(ids[row]) * c;
  float* dst = out + row * c;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dst[j] = src[j];
}

__global__ void iota_kernel(int32_t* p, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    p[i] = static_cast<int32_t>(i);
}

// Block i: if sorted position i starts a run of equal ids, sum the run into that id's row.
__global__ void embedding_backward_runs_kernel(float* dweight, const float* dout, const int32_t* sorted_ids,
                                               const int32_t* sorted_pos, int64_t n, int64_t c, bool accumulate) {
  const int64_t i = blockIdx.x;
  const int32_t id = sorted_ids[i];
  if (i > 0 && sorted_ids[i - 1] == id) return;
  int64_t end = i + 1;
  while (end < n && sorted_ids[end] == id) ++end;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    float acc = 0.f;
    for (int64_t r = i; r < end; ++r) acc += dout[static_cast<int64_t>(sorted_pos[r]) * c + j];
    float& dst = dweight[static_cast<int64_t>(id) * c + j];
    dst = accumulate ? dst + acc : acc;
  }
}

int end_bit_for(int64_t v) {
  int bits = 1;
  while (bits < 31 && (int64_t(1) << bits) < v) ++bits;
  return bits;
}

// Workspace layout: keys_out (N), pos_in (N), pos_out (N) as i32, then CUB's temporary storage.
std::size_t cub_bytes(int64_t n) {
  std::size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr), static_cast<int>(n));
  return bytes;
}

std::size_t align256(std::size_t x) { return (x + 255) / 256 * 256; }

}  // namespace

void find_invalid_ids_i32(long long* first_bad, const int32_t* ids, int64_t n, int64_t v, int32_t allowed,
                          cudaStream_t stream) {
  auto* p = reinterpret_cast<unsigned long long*>(first_bad);
  set_scalar_kernel<<<1, 1, 0, stream>>>(p, static_cast<unsigned long long>(n));
  LMF_CUDA_LAUNCH_CHECK();
  if (n == 0) return;
  find_invalid_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, ids, n, v, allowed);
  LMF_CUDA_LAUNCH_CHECK();
}

void find_invalid_ids_u16(long long* first_bad, const uint16_t* ids, int64_t n, int64_t v,
                          cudaStream_t stream) {
  auto* p = reinterpret_cast<unsigned long long*>(first_bad);
  set_scalar_kernel<<<1, 1, 0, stream>>>(p, static_cast<unsigned long long>(n));
  LMF_CUDA_LAUNCH_CHECK();
  if (n == 0) return;
  find_invalid_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, ids, n, v, -1LL);
  LMF_CUDA_LAUNCH_CHECK();
}

void embedding_forward_i32(float* out, const float* weight, const int32_t* ids, int64_t n, int64_t c,
                           cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  check_grid("embedding_forward", "B*T (ids)", n, kMaxGridX);
  embedding_forward_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(out, weight, ids, c);
  LMF_CUDA_LAUNCH_CHECK();
}

void embedding_forward_u16(float* out, const float* weight, const uint16_t* ids, int64_t n, int64_t c,
                           cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  check_grid("embedding_forward", "B*T (ids)", n, kMaxGridX);
  embedding_forward_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(out, weight, ids, c);
  LMF_CUDA_LAUNCH_CHECK();
}

std::size_t embedding_backward_workspace(int64_t n) {
  return 3 * align256(sizeof(int32_t) * static_cast<std::size_t>(n > 0 ? n : 1)) + cub_bytes(n) + 256;
}

void embedding_backward(float* dweight, const float* dout, const int32_t* ids, int64_t n, int64_t c,
                        int64_t v, bool accumulate, void* workspace, std::size_t workspace_bytes,
                        cudaStream_t stream) {
  if (!accumulate) LMF_CUDA_CHECK(cudaMemsetAsync(dweight, 0, sizeof(float) * v * c, stream));
  if (n == 0 || c == 0) return;
  if (workspace_bytes < embedding_backward_workspace(n)) throw CudaError("embedding_backward: workspace too small");
  char* base = static_cast<char*>(workspace);
  const std::size_t slot = align256(sizeof(int32_t) * n);
  auto* keys_out = reinterpret_cast<int32_t*>(base);
  auto* pos_in = reinterpret_cast<int32_t*>(base + slot);
  auto* pos_out = reinterpret_cast<int32_t*>(base + 2 * slot);
  void* temp = base + 3 * slot;
  std::size_t temp_bytes = workspace_bytes - 3 * slot;
  iota_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(pos_in, n);
  LMF_CUDA_LAUNCH_CHECK();
  // LSD radix sort is stable: equal ids keep increasing positions, which fixes the summation order.
  LMF_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, keys_out, pos_in, pos_out,
                                                 static_cast<int>(n), 0, end_bit_for(v), stream));
  check_grid("embedding_backward", "B*T (ids)", n, kMaxGridX);
  embedding_backward_runs_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(dweight, dout, keys_out,
                                                                                    pos_out, n, c, accumulate);
  LMF_CUDA_LAUNCH_CHECK();
}

}  // namespace lmf::kernels
