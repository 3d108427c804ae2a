// Elementwise add/sub/mul/scale with a periodic second operand: a (N), b (NB) with N % NB == 0,
// so one loop serves same-shape, suffix broadcast (a bias (C) over (B, T, C)) and scalars.
// Gradients: add da = dout, db = sum_bcast(dout); sub db = -sum_bcast(dout);
// mul da = dout * b, db = sum_bcast(dout * a); scale da = factor * dout.
#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {
namespace {

constexpr int64_t kParallelElems = 1 << 15;

// out[r*nb + j] = op(a[r*nb + j], b[j]); parallel over the flat index in fixed blocks so a single
// long row (nb == n) and many short rows are both split across threads.
template <class Op>
void periodic_map(float* out, const float* a, const float* b, int64_t n, int64_t nb, Op op) {
  if (n == 0) return;
  if (nb == n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
    for (int64_t i = 0; i < n; ++i) out[i] = op(a[i], b[i]);
  } else if (nb == 1) {
    const float s = b[0];
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
    for (int64_t i = 0; i < n; ++i) out[i] = op(a[i], s);
  } else {
    const int64_t rows = n / nb;
#pragma omp parallel for schedule(static) if (n > kParallelElems)
    for (int64_t r = 0; r < rows; ++r) {
      const float* ar = a + r * nb;
      float* orow = out + r * nb;
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) orow[j] = op(ar[j], b[j]);
    }
  }
}

}  // namespace

void add_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb) {
  periodic_map(out, a, b, n, nb, [](float x, float y) { return x + y; });
}

void sub_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb) {
  periodic_map(out, a, b, n, nb, [](float x, float y) { return x - y; });
}

void mul_forward(float* out, const float* a, const float* b, int64_t n, int64_t nb) {
  periodic_map(out, a, b, n, nb, [](float x, float y) { return x * y; });
}

void scale_forward(float* out, const float* a, float factor, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * factor;
}

void mul_backward(float* da, float* db, const float* dout, const float* a, const float* b,
                  int64_t n, int64_t nb) {
  if (da) mul_forward(da, dout, b, n, nb);
  if (!db) return;
  if (nb == n) {
    mul_forward(db, dout, a, n, n);
    return;
  }
  float* prod = vec::thread_scratch<float>(0, static_cast<std::size_t>(n));  // (N / NB, NB)
  mul_forward(prod, dout, a, n, n);
  column_sums(prod, db, n / nb, nb);
}

}  // namespace lmf::cpu
