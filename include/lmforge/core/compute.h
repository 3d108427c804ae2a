// Run settings that change how ops compute (matrix-product precision on the CPU, the GPU's matrix
// backend, OpenMP threads), held per thread and installed for a scope by ComputeScope instead of
// being process-wide globals: two trainers, or a test and the library, cannot overwrite each other's.
#pragma once

#include <cstdint>

namespace lmf {

/// Which implementation multiplies matrices on a GPU: `custom`, the hand-written mma.sync kernel
/// (sm_80+); `cublas`, cuBLASLt with a cached algorithm per shape (the baseline); `wgmma`, the Hopper
/// TMA + wgmma kernel, which falls back to `custom` on a device other than sm_90 or a build without
/// the 90a architecture. All round f32 operands to bf16 and accumulate in f32. The environment
/// variable LMF_MATMUL (custom|mma|cublas|wgmma) overrides the choice for the whole process.
enum class MatmulBackend : uint8_t { custom, cublas, wgmma };

/// Which kernel computes attention on a GPU: `flash`, the tensor-core kernel (bf16 q, k, v and
/// output, f32 accumulation; sm_80+, head sizes 64 and 128, as many queries as keys), which falls
/// back to the f32 kernel wherever it cannot run; `f32`, the f32 CUDA-core kernel everywhere (any
/// head size up to 128, queries behind a KV cache). The environment variable LMF_ATTENTION
/// (flash|f32) overrides the choice for the whole process. The CPU ignores it.
enum class AttentionBackend : uint8_t { flash, f32 };

/// The settings ops read on the calling thread (compute_options()). Ops pass them down to the
/// backends explicitly, so OpenMP worker threads and GPU streams see the caller's settings.
struct ComputeOptions {
  /// CPU matmul and linear with operands rounded to bf16 and f32 accumulation (attention's own
  /// products stay f32): about 1.5x the speed on AVX-512 BF16 CPUs, at bf16 input precision.
  /// Ignored where cpu_matmul_bf16_available() is false.
  bool cpu_matmul_bf16 = false;
  /// Mixed precision (`run.precision: bf16`): products and norms write bf16 activations, products
  /// read a weight's bf16 copy (nn::Module::refresh_bf16_copies) instead of rounding the f32 weight
  /// per call, and every op that takes a bf16 input computes in f32 and writes bf16. Gradients,
  /// the residual stream (a sum with an f32 operand is f32), losses and parameters stay f32.
  bool mixed_bf16 = false;
  /// The GPU's matrix products.
  MatmulBackend matmul_backend = MatmulBackend::custom;
  /// The GPU's attention kernel.
  AttentionBackend attention_backend = AttentionBackend::flash;
  /// On a GPU, embedding, cross_entropy, the chunked lm_head and gather check every id against the
  /// vocabulary with one read-back to the host (which waits for the GPU). The trainer turns this off
  /// on its step, since its loader has checked every input and target on the host already; direct
  /// callers keep the check. The CPU always checks (it costs no wait there).
  bool device_id_checks = true;
  /// OpenMP threads for the scope (OpenMP's thread count is itself per calling thread); 0 keeps
  /// the count in force when the scope opens.
  int threads = 0;
};

/// The options in force on this thread: the innermost ComputeScope's, or the defaults.
const ComputeOptions& compute_options();

/// Installs `options` on this thread for its lifetime; the previous options (and OpenMP thread
/// count, when `options.threads` > 0) come back when it ends. Scopes nest; destroy them in reverse
/// order of construction, on the thread that made them.
class ComputeScope {
 public:
  explicit ComputeScope(const ComputeOptions& options);
  ~ComputeScope();
  ComputeScope(const ComputeScope&) = delete;
  ComputeScope& operator=(const ComputeScope&) = delete;

 private:
  ComputeOptions previous_;
  int previous_threads_ = 0;  // OpenMP's count before the scope, restored when options.threads > 0
  bool set_threads_ = false;
};

}  // namespace lmf
