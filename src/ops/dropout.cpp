// Inverted dropout. The mask is recomputed in the backward pass from (seed, base), the first
// counter reserved from the generator for this call, so nothing the size of x is saved and the
// draws do not depend on the number of threads.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;
namespace {

// out has x_in's dtype. On CUDA a bf16 x is read and written in place (the kept values scaled in
// f32 and rounded once); the CPU kernel is f32-only, so there a bf16 x is widened, masked and
// rounded back, which gives the same values.
Tensor dropout_apply(const Tensor& x_in, float p, uint64_t seed, uint64_t base) {
  if (x_in.device().type == DeviceType::cuda) {
    const Tensor x = x_in.contiguous_copy();
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    cuda::dropout_apply_typed(x.device(), out.raw_data(), out.dtype(), x.raw_data(), x.dtype(), x.numel(), p, seed,
                              base);
    return out;
  }
  if (x_in.dtype() != DType::f32) return stored_as(dropout_apply(x_in.to(DType::f32), p, seed, base), x_in.dtype());
  const Tensor x = x_in.contiguous_copy();
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  cpu::dropout_apply(out.data<float>(), x.data<float>(), x.numel(), p, seed, base);
  return out;
}

}  // namespace

Tensor dropout(const Tensor& x, float p, bool training, Generator& gen) {
  check_float("dropout", x, "x");
  LMF_CHECK(p >= 0.f && p <= 1.f, "dropout: p must be in [0, 1], got ", p);
  if (!training || p == 0.f) return x;
  const uint64_t seed = gen.seed(), base = gen.advance(static_cast<uint64_t>(x.numel()));
  Tensor out = dropout_apply(x, p, seed, base);
  return record(out, "dropout", {x}, [p, seed, base](const Tensor& g) {
    return std::vector<Tensor>{dropout_apply(g, p, seed, base)};
  });
}

}  // namespace lmf
