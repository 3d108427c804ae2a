// Embedding lookup of token ids (i32, or u16 straight from token shards) into a (V, C) table.
// Every id is checked against V before the kernel runs: a bad id in a data file must be an error
// that names it, never an out-of-bounds read. Gradient: dweight = scatter-sum of dout by id,
// written or added into the destination the autograd engine hands the backward.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

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
  LMF_CHECK(v > 0 || n == 0, "embedding: ", n, " ids for an empty table ", shape_str(weight_in.shape()));
  // The id checks let one value through (cross_entropy's ignore_index); 0 is valid here anyway.
  constexpr int32_t kNoneAllowed = 0;
  const bool wide = ids.dtype() == DType::i32;
  const Device dev = weight.device();
  switch (dev.type) {
    case DeviceType::cpu:
      if (wide) {
        cpu::check_ids_i32("embedding: id", ids.data<int32_t>(), n, v, kNoneAllowed);
        cpu::embedding_forward_i32(out.data<float>(), weight.data<float>(), ids.data<int32_t>(), n, c);
      } else {
        cpu::check_ids_u16("embedding: id", ids.data<uint16_t>(), n, v);
        cpu::embedding_forward_u16(out.data<float>(), weight.data<float>(), ids.data<uint16_t>(), n, c);
      }
      break;
    case DeviceType::cuda:
      if (wide) {
        cuda::check_ids_i32(dev, "embedding: id", ids.data<int32_t>(), n, v, kNoneAllowed);
        cuda::embedding_forward_i32(dev, out.data<float>(), weight.data<float>(), ids.data<int32_t>(), n, c);
      } else {
        cuda::check_ids_u16(dev, "embedding: id", ids.data<uint16_t>(), n, v);
        cuda::embedding_forward_u16(dev, out.data<float>(), weight.data<float>(), ids.data<uint16_t>(), n, c);
      }
      break;
  }
  // The scatter-add writes the engine's destination, or adds into it (a parameter's slab view).
  return record_into(
      out, "embedding", {weight_in, ids_in},
      [ids = ids.detach(), v, c, n, wide](const Tensor& g_in, const std::vector<GradDest>& dests) {
        if (!dests[0].needed) return std::vector<Tensor>{Tensor(), Tensor()};
        const Tensor g = g_in.contiguous_copy();  // (N, C)
        const Device dev = g.device();
        Tensor dweight = dests[0].output({v, c}, dev);  // (V, C)
        const bool acc = dests[0].accumulate;
        switch (dev.type) {
          case DeviceType::cpu:
            if (wide) {
              cpu::embedding_backward_i32(dweight.data<float>(), g.data<float>(), ids.data<int32_t>(), n, c, v, acc);
            } else {
              cpu::embedding_backward_u16(dweight.data<float>(), g.data<float>(), ids.data<uint16_t>(), n, c, v, acc);
            }
            break;
          case DeviceType::cuda:
            if (wide) {
              cuda::embedding_backward_i32(dev, dweight.data<float>(), g.data<float>(), ids.data<int32_t>(), n, c, v,
                                           acc);
            } else {
              cuda::embedding_backward_u16(dev, dweight.data<float>(), g.data<float>(), ids.data<uint16_t>(), n, c, v,
                                           acc);
            }
            break;
        }
        return std::vector<Tensor>{dweight, Tensor()};
      });
}

}  // namespace lmf
