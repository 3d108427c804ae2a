// The one explicit dtype conversion of the graph (f32 <-> bf16). Gradients are f32 whatever the
// dtype of the tensor they belong to, so the backward passes the gradient through untouched.
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

Tensor cast(const Tensor& x, DType dtype) {
  check_float("cast", x, "x");
  LMF_CHECK(dtype == DType::f32 || dtype == DType::bf16, "cast: target dtype must be f32 or bf16, got ",
            dtype_name(dtype));
  if (x.dtype() == dtype) return x;
  return record(x.to(dtype), "cast", {x}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

}  // namespace lmf
