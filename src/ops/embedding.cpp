// Embedding lookup of token ids (i32, or u16 straight from token shards) into a (V, C) table.
// Every id is checked against V before the kernel runs: a bad id in a data file must be an error
// that names it, never an out-of-bounds read. Gradient: dweight = scatter-sum of dout by id.
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;
namespace {

template <class Id>
void check_ids(const Id* ids, int64_t n, int64_t v) {
  int64_t first_bad = n;
#pragma omp parallel for schedule(static) reduction(min : first_bad) if (n > 65536)
  for (int64_t i = 0; i < n; ++i)
    if (static_cast<int64_t>(ids[i]) < 0 || static_cast<int64_t>(ids[i]) >= v) first_bad = std::min(first_bad, i);
  LMF_CHECK(first_bad == n, "embedding: id ", static_cast<int64_t>(ids[first_bad]), " at position ",
            first_bad, " is outside the vocabulary of size ", v);
}

}  // namespace

Tensor embedding(const Tensor& weight_in, const Tensor& ids_in) {
  check_f32("embedding", weight_in, "weight");
  check_defined("embedding", ids_in, "ids");
  check_same_device("embedding", weight_in, "weight", ids_in, "ids");
  LMF_CHECK(weight_in.dim() == 2, "embedding: weight must be (V, C), got ",
            shape_str(weight_in.shape()));
  LMF_CHECK(ids_in.dtype() == DType::i32 || ids_in.dtype() == DType::u16,
            "embedding: ids must be i32 or u16, got ", dtype_name(ids_in.dtype()), " (shape ",
            shape_str(ids_in.shape()), ")");
  const int64_t v = weight_in.size(0), c = weight_in.size(1), n = ids_in.numel();
  const Tensor weight = weight_in.contiguous_copy(), ids = ids_in.contiguous_copy();
  Shape out_shape = ids.shape();
  out_shape.push_back(c);
  Tensor out = Tensor::empty(out_shape, DType::f32, weight.device());
  const bool wide = ids.dtype() == DType::i32;
  switch (weight.device().type) {
    case DeviceType::cpu:
      if (wide) {
        check_ids(ids.data<int32_t>(), n, v);
        cpu::embedding_forward_i32(out.data<float>(), weight.data<float>(), ids.data<int32_t>(), n, c);
      } else {
        check_ids(ids.data<uint16_t>(), n, v);
        cpu::embedding_forward_u16(out.data<float>(), weight.data<float>(), ids.data<uint16_t>(), n, c);
      }
      break;
    case DeviceType::cuda:
      if (wide) {
        cuda::check_ids_i32(weight.device(), "embedding", ids.data<int32_t>(), n, v, -1);
        cuda::embedding_forward_i32(weight.device(), out.data<float>(), weight.data<float>(), ids.data<int32_t>(), n, c);
      } else {
        cuda::check_ids_u16(weight.device(), "embedding", ids.data<uint16_t>(), n, v);
        cuda::embedding_forward_u16(weight.device(), out.data<float>(), weight.data<float>(), ids.data<uint16_t>(), n, c);
      }
      break;
  }
  return record(out, "embedding", {weight_in, ids_in},
                [ids = ids.detach(), weight_leaf = weight_in, v, c, n, wide](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // (N, C)
                  if (g.device().is_cpu()) {  // a parameter's slab gradient takes the rows directly
                    const Tensor target = leaf_grad_target(weight_leaf, g.device());
                    const bool direct = target.defined();
                    Tensor dweight = direct ? Tensor() : Tensor::empty({v, c}, DType::f32, g.device());  // (V, C)
                    float* dst = direct ? target.data<float>() : dweight.data<float>();
                    if (wide) {
                      cpu::embedding_backward_i32(dst, g.data<float>(), ids.data<int32_t>(), n, c, v, direct);
                    } else {
                      cpu::embedding_backward_u16(dst, g.data<float>(), ids.data<uint16_t>(), n, c, v, direct);
                    }
                    return std::vector<Tensor>{dweight, Tensor()};
                  }
                  Tensor dweight = Tensor::empty({v, c}, DType::f32, g.device());  // (V, C), on a GPU
                  if (wide) {
                    cuda::embedding_backward_i32(g.device(), dweight.data<float>(), g.data<float>(), ids.data<int32_t>(), n, c, v);
                  } else {
                    cuda::embedding_backward_u16(g.device(), dweight.data<float>(), g.data<float>(), ids.data<uint16_t>(), n, c, v);
                  }
                  return std::vector<Tensor>{dweight, Tensor()};
                });
}

}  // namespace lmf
