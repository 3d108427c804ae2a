// The per-thread compute options and their scope guard. OpenMP's thread count (nthreads-var) is
// already per calling thread, so a scope that sets it is as local as the other options.
#include "lmforge/core/compute.h"

#include <omp.h>

namespace lmf {
namespace {
thread_local ComputeOptions g_options;
}

const ComputeOptions& compute_options() { return g_options; }

ComputeScope::ComputeScope(const ComputeOptions& options) : previous_(g_options) {
  if (options.threads > 0) {
    previous_threads_ = omp_get_max_threads();
    set_threads_ = true;
    omp_set_num_threads(options.threads);
  }
  g_options = options;
}

ComputeScope::~ComputeScope() {
  g_options = previous_;
  if (set_threads_) omp_set_num_threads(previous_threads_);
}

}  // namespace lmf
