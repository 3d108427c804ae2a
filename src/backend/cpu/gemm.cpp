// Matrix products for every CPU op, on Eigen maps over raw row-major pointers. The library is built
// with EIGEN_DONT_PARALLELIZE so that threading is decided here, once: the output rows (times the
// batch) are cut into blocks and each OpenMP thread runs one single-threaded Eigen GEMM per block.
// Shapes: c (M, N) = op(a) (M, K) · op(b) (K, N); the backward of a product is itself two products
// with transposes, which is why the transpose flags exist.
#include <omp.h>

#include <Eigen/Dense>
#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace lmf::cpu {
namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat>;
using MutMap = Eigen::Map<RowMat>;

// Rows [r0, r1) of c = op(a) · op(b), single-threaded.
void gemm_rows(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k,
               bool trans_a, bool trans_b, bool accumulate, int64_t r0, int64_t r1) {
  const int64_t rows = r1 - r0;
  if (rows <= 0 || n == 0) return;
  MutMap out(c + r0 * n, rows, n);
  if (k == 0) {
    if (!accumulate) out.setZero();
    return;
  }
  auto run = [&](const auto& lhs, const auto& rhs) {
    if (accumulate) {
      out.noalias() += lhs * rhs;
    } else {
      out.noalias() = lhs * rhs;
    }
  };
  auto with_rhs = [&](const auto& lhs) {
    if (trans_b) {
      run(lhs, ConstMap(b, n, k).transpose());
    } else {
      run(lhs, ConstMap(b, k, n));
    }
  };
  if (trans_a) {
    with_rhs(ConstMap(a, k, m).middleCols(r0, rows).transpose());
  } else {
    with_rhs(ConstMap(a + r0 * k, rows, k));
  }
}

// Below this many multiply-adds a product runs on one thread: the fork costs more than it saves.
constexpr double kParallelFlops = 1 << 16;
// Row blocks smaller than this starve Eigen's register blocking.
constexpr int64_t kMinBlockRows = 16;

}  // namespace

void gemm_batched(int64_t batch, const float* a, int64_t stride_a, const float* b,
                  int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k,
                  bool trans_a, bool trans_b, bool accumulate) {
  if (batch <= 0 || m <= 0 || n <= 0) return;
  const double flops = static_cast<double>(batch) * m * n * std::max<int64_t>(k, 1);
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads == 1 || flops < kParallelFlops) {
    for (int64_t i = 0; i < batch; ++i)
      gemm_rows(a + i * stride_a, b + i * stride_b, c + i * stride_c, m, n, k, trans_a, trans_b,
                accumulate, 0, m);
    return;
  }
  // Enough blocks per matrix that batch * blocks covers the threads a few times over.
  const int64_t wanted = (4 * threads + batch - 1) / batch;
  const int64_t blocks = std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, m / kMinBlockRows));
  const int64_t block_rows = (m + blocks - 1) / blocks;
  const int64_t items = batch * blocks;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t i = item / blocks, r0 = (item % blocks) * block_rows;
    gemm_rows(a + i * stride_a, b + i * stride_b, c + i * stride_c, m, n, k, trans_a, trans_b,
              accumulate, r0, std::min(m, r0 + block_rows));
  }
}

void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, bool trans_a,
          bool trans_b, bool accumulate) {
  gemm_batched(1, a, 0, b, 0, c, 0, m, n, k, trans_a, trans_b, accumulate);
}

// Fixed chunks of rows, each summed into its own partial row, then the partials summed in order:
// the result does not depend on how many threads ran the chunks.
void column_sums(const float* in, float* out, int64_t rows, int64_t cols) {
  if (cols <= 0) return;
  constexpr int64_t kChunkRows = 64;
  const int64_t chunks = std::max<int64_t>(1, (rows + kChunkRows - 1) / kChunkRows);
  std::vector<double> partial(static_cast<std::size_t>(chunks * cols), 0.0);  // (chunks, cols)
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    double* acc = partial.data() + ch * cols;
    const int64_t r1 = std::min(rows, (ch + 1) * kChunkRows);
    for (int64_t r = ch * kChunkRows; r < r1; ++r) {
      const float* row = in + r * cols;
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) acc[j] += row[j];
    }
  }
#pragma omp parallel for schedule(static) if (chunks * cols > 32768)
  for (int64_t j = 0; j < cols; ++j) {
    double s = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch) s += partial[ch * cols + j];
    out[j] = static_cast<float>(s);
  }
}

}  // namespace lmf::cpu
