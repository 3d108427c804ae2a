// Matrix products for every CPU op. Threading is decided here, once: the output (times the batch) is
// cut into one block per thread and each OpenMP thread runs a single-threaded GEMM on its block,
// the AVX-512 kernel of gemm_avx512.cpp where the CPU has it, otherwise Eigen (built with
// EIGEN_DONT_PARALLELIZE) on maps over the raw row-major pointers.
// Shapes: c (M, N) = op(a) (M, K) · op(b) (K, N); the backward of a product is itself two products
// with transposes, which is why the transpose flags exist.
#include <omp.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_kernel.h"
#include "backend/cpu/vec_math.h"

namespace lmf::cpu {
namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat>;
using MutMap = Eigen::Map<RowMat>;

using StridedMap = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

using ConstStrided = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;

// gemm_serial on Eigen, for CPUs without AVX-512 (no bf16: its products are f32).
void gemm_eigen(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
                bool accumulate) {
  StridedMap out(c, m, n, Eigen::OuterStride<>(ldc));
  if (k == 0) {
    if (!accumulate) out.setZero();
    return;
  }
  const auto run = [&](const auto& lhs, const auto& rhs) {
    if (accumulate) {
      out.noalias() += lhs * rhs;
    } else {
      out.noalias() = lhs * rhs;
    }
  };
  const auto with_rhs = [&](const auto& lhs) {
    if (b.trans) {
      run(lhs, ConstStrided(b.data, n, k, Eigen::OuterStride<>(b.ld)).transpose());
    } else {
      run(lhs, ConstStrided(b.data, k, n, Eigen::OuterStride<>(b.ld)));
    }
  };
  if (a.trans) {
    with_rhs(ConstStrided(a.data, k, m, Eigen::OuterStride<>(a.ld)).transpose());
  } else {
    with_rhs(ConstStrided(a.data, m, k, Eigen::OuterStride<>(a.ld)));
  }
}

// The block rows [r0, r1) x columns [c0, c1) of c = op(a) · op(b), single-threaded.
// With gelu (M, N), also the GELU of the finished block into it.
// a_half, b_half: the operand is stored as bf16 (gemm_kernel reads it; see gemm_batched_any).
void gemm_block(const float* a, bool a_half, const float* b, bool b_half, float* c, int64_t m, int64_t n, int64_t k,
                bool trans_a, bool trans_b, bool accumulate, int64_t r0, int64_t r1, int64_t c0,
                int64_t c1, float* gelu, bool bf16) {
  const int64_t rows = r1 - r0, cols = c1 - c0;
  if (rows <= 0 || cols <= 0) return;
  const Operand op_a{operand_at(a, trans_a ? r0 : r0 * k, a_half), trans_a ? m : k, trans_a, a_half};
  const Operand op_b{operand_at(b, trans_b ? c0 * k : c0, b_half), trans_b ? k : n, trans_b, b_half};
  gemm_serial(op_a, op_b, c + r0 * n + c0, n, rows, cols, k, accumulate, bf16,
              gelu ? gelu + r0 * n + c0 : nullptr, n);
}

// Below this many multiply-adds a product runs on one thread: the fork costs more than it saves.
constexpr double kParallelFlops = 1 << 16;
// Blocks narrower than this (rows or columns) starve Eigen's register blocking.
constexpr int64_t kMinBlock = 16;

}  // namespace

void gemm_serial(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
                 bool accumulate, bool bf16, float* gelu, int64_t ldg) {
  if (m <= 0 || n <= 0) return;
  if (gemm_kernel(a, b, c, ldc, m, n, k, accumulate, bf16, gelu, ldg)) return;
  gemm_eigen(a, b, c, ldc, m, n, k, accumulate);
  if (gelu)
    for (int64_t r = 0; r < m; ++r) gelu_row(gelu + r * ldg, c + r * ldc, n);
}

namespace {

// The whole batch as f32 (the widened copy of a bf16 operand where gemm_kernel does not run).
std::vector<float> widened(const void* x, int64_t stride, int64_t batch, int64_t rows, int64_t cols) {
  const int64_t count = (stride == 0 ? 0 : (batch - 1) * stride) + rows * cols;
  std::vector<float> out(static_cast<std::size_t>(count));
  const auto* bits = static_cast<const uint16_t*>(x);
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(&out[static_cast<std::size_t>(i)], &u, 4);
  }
  return out;
}

// gemm_batched with either operand possibly stored as bf16 (a_half, b_half).
// Each thread packs the operand it shares with the other blocks once per block, so the output is
// cut along its longer side into as few blocks as keep the threads busy: for the tied LM head
// (B*T, C) x (C, V), cutting V instead of B*T rows stops every thread from repacking the whole
// (C, V) weight (GPT-2 124M step at B = 4, T = 64 on 2 Zen 4 cores: see docs/benchmarks.md).
void gemm_batched_any(int64_t batch, const float* a, bool a_half, int64_t stride_a, const float* b, bool b_half,
                      int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k, bool trans_a,
                      bool trans_b, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  if (batch <= 0 || m <= 0 || n <= 0) return;
  if ((a_half || b_half) && !gemm_kernel_enabled()) {  // Eigen reads f32 only
    std::vector<float> wa, wb;
    if (a_half) wa = widened(a, stride_a, batch, m, k);
    if (b_half) wb = widened(b, stride_b, batch, k, n);
    gemm_batched_any(batch, a_half ? wa.data() : a, false, stride_a, b_half ? wb.data() : b, false, stride_b, c,
                     stride_c, m, n, k, trans_a, trans_b, accumulate, gelu_out, options);
    return;
  }
  const bool bf16 = options.cpu_matmul_bf16;  // read here: the worker threads see the caller's choice
  const auto gelu_of = [&](int64_t i) { return gelu_out ? gelu_out + i * stride_c : nullptr; };
  const double flops = static_cast<double>(batch) * m * n * std::max<int64_t>(k, 1);
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads == 1 || flops < kParallelFlops) {
    for (int64_t i = 0; i < batch; ++i)
      gemm_block(operand_at(a, i * stride_a, a_half), a_half, operand_at(b, i * stride_b, b_half), b_half,
                 c + i * stride_c, m, n, k, trans_a, trans_b, accumulate, 0, m, 0, n, gelu_of(i), bf16);
    return;
  }
  // Blocks per matrix: enough that batch * blocks is a multiple of the threads (even static split).
  const int64_t wanted = (threads + batch - 1) / batch;
  const bool split_cols = n > m;
  const int64_t side = split_cols ? n : m;
  const int64_t blocks = std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, side / kMinBlock));
  // Column blocks are rounded to whole 16-float vectors so each starts on a packet boundary.
  int64_t block_size = (side + blocks - 1) / blocks;
  if (split_cols) block_size = std::min(side, (block_size + 15) / 16 * 16);
  const int64_t items = batch * blocks;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t i = item / blocks, s0 = (item % blocks) * block_size;
    const int64_t s1 = std::min(side, s0 + block_size);
    const float* ai = operand_at(a, i * stride_a, a_half);
    const float* bi = operand_at(b, i * stride_b, b_half);
    if (split_cols) {
      gemm_block(ai, a_half, bi, b_half, c + i * stride_c, m, n, k, trans_a, trans_b, accumulate, 0, m, s0, s1,
                 gelu_of(i), bf16);
    } else {
      gemm_block(ai, a_half, bi, b_half, c + i * stride_c, m, n, k, trans_a, trans_b, accumulate, s0, s1, 0, n,
                 gelu_of(i), bf16);
    }
  }
}

}  // namespace

void gemm_batched(int64_t batch, const float* a, int64_t stride_a, const float* b,
                  int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k,
                  bool trans_a, bool trans_b, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  gemm_batched_any(batch, a, false, stride_a, b, false, stride_b, c, stride_c, m, n, k, trans_a, trans_b, accumulate,
                   gelu_out, options);
}

void gemm_batched_mixed(int64_t batch, const void* a, bool a_bf16, int64_t stride_a, const void* b, bool b_bf16,
                        int64_t stride_b, float* c, int64_t stride_c, int64_t m, int64_t n, int64_t k, bool trans_a,
                        bool trans_b, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  gemm_batched_any(batch, static_cast<const float*>(a), a_bf16, stride_a, static_cast<const float*>(b), b_bf16,
                   stride_b, c, stride_c, m, n, k, trans_a, trans_b, accumulate, gelu_out, options);
}

void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, bool trans_a,
          bool trans_b, bool accumulate, float* gelu_out, const ComputeOptions& options) {
  gemm_batched(1, a, 0, b, 0, c, 0, m, n, k, trans_a, trans_b, accumulate, gelu_out, options);
}

void linear_forward(float* out, const float* x, const float* w, const float* bias, int64_t n,
                    int64_t out_features, int64_t in_features, float* gelu_out, const ComputeOptions& options) {
  if (bias) {  // start from the bias rows so the GEMM accumulates onto them
#pragma omp parallel for schedule(static) if (n * out_features > 32768)
    for (int64_t i = 0; i < n; ++i) std::copy(bias, bias + out_features, out + i * out_features);
  }
  gemm(x, w, out, n, out_features, in_features, false, true, bias != nullptr, gelu_out, options);
}

// Fixed chunks of rows, each summed into its own partial row, then the partials summed in order:
// the result does not depend on how many threads ran the chunks.
void column_sums(const float* in, float* out, int64_t rows, int64_t cols, float factor, bool accumulate) {
  if (cols <= 0) return;
  constexpr int64_t kChunkRows = 64;
  const int64_t chunks = std::max<int64_t>(1, (rows + kChunkRows - 1) / kChunkRows);
  double* partial = vec::thread_scratch<double>(0, static_cast<std::size_t>(chunks * cols));  // (chunks, cols)
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    double* acc = partial + ch * cols;
    std::fill(acc, acc + cols, 0.0);
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
    const float total = static_cast<float>(s * factor);  // factor 1: the bits of the plain sum
    out[j] = accumulate ? out[j] + total : total;
  }
}

}  // namespace lmf::cpu
