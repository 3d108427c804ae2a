// Embedding lookup: out (N, C) = weight (V, C)[ids (N)], ids of i32 or u16 (token shards are u16).
// Gradient: dweight[v] = sum of dout rows whose id is v (written, zero rows for unused ids; or
// added to an existing gradient).
// The backward is parallel over channel blocks: each thread owns whole columns of dweight and
// walks every id, so there are no races and the summation order is fixed.
#include <algorithm>
#include <cstring>

#include "backend/cpu/cpu_kernels.h"
#include "lmforge/core/error.h"

namespace lmf::cpu {
namespace {

template <class Id>
void embedding_forward(float* out, const float* weight, const Id* ids, int64_t n, int64_t c) {
#pragma omp parallel for schedule(static) if (n * c > 32768)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * c, weight + static_cast<int64_t>(ids[i]) * c, c * sizeof(float));
}

template <class Id>
void embedding_backward(float* dweight, const float* dout, const Id* ids, int64_t n, int64_t c,
                        int64_t v, bool accumulate) {
  if (!accumulate) fill(dweight, 0.f, v * c);
  constexpr int64_t kBlock = 64;  // 256 bytes of a row per id: whole cache lines, many blocks
  const int64_t blocks = (c + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n * c > 32768)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kBlock, width = std::min(kBlock, c - c0);
    for (int64_t i = 0; i < n; ++i) {
      float* dst = dweight + static_cast<int64_t>(ids[i]) * c + c0;  // (width)
      const float* src = dout + i * c + c0;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) dst[j] += src[j];
    }
  }
}

// The first position whose id is outside [0, V) and not `allowed` (n when none): a min-reduction,
// so the answer does not depend on the thread count.
template <class Id>
void check_ids(const char* op, const Id* ids, int64_t n, int64_t v, int64_t allowed) {
  int64_t first_bad = n;
#pragma omp parallel for schedule(static) reduction(min : first_bad) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    if (id != allowed && (id < 0 || id >= v)) first_bad = std::min(first_bad, i);
  }
  LMF_CHECK(first_bad == n, op, " ", static_cast<int64_t>(ids[first_bad]), " at position ", first_bad,
            " is outside the vocabulary of size ", v);
}

}  // namespace

void check_ids_i32(const char* op, const int32_t* ids, int64_t n, int64_t v, int32_t allowed) {
  check_ids(op, ids, n, v, allowed);
}
void check_ids_u16(const char* op, const uint16_t* ids, int64_t n, int64_t v) { check_ids(op, ids, n, v, -1); }

void embedding_forward_i32(float* out, const float* weight, const int32_t* ids, int64_t n, int64_t c) {
  embedding_forward(out, weight, ids, n, c);
}
void embedding_forward_u16(float* out, const float* weight, const uint16_t* ids, int64_t n, int64_t c) {
  embedding_forward(out, weight, ids, n, c);
}
void embedding_backward_i32(float* dweight, const float* dout, const int32_t* ids, int64_t n,
                            int64_t c, int64_t v, bool accumulate) {
  embedding_backward(dweight, dout, ids, n, c, v, accumulate);
}
void embedding_backward_u16(float* dweight, const float* dout, const uint16_t* ids, int64_t n,
                            int64_t c, int64_t v, bool accumulate) {
  embedding_backward(dweight, dout, ids, n, c, v, accumulate);
}

}  // namespace lmf::cpu
