// Broadcast shapes, layouts and the gradient reduction shared by the broadcasting ops
// (elementwise.cpp, where in shape_ops.cpp, expand in views.cpp). See broadcast.h.
#include "ops/broadcast.h"

#include <algorithm>
#include <string>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"

namespace lmf::ops_detail {

Shape broadcast_shape(const char* op, std::initializer_list<const Shape*> shapes) {
  std::size_t nd = 0;
  for (const Shape* s : shapes) nd = std::max(nd, s->size());
  Shape out(nd, 1);
  bool ok = nd <= static_cast<std::size_t>(kernels::kMaxBroadcastDims);
  for (const Shape* s : shapes) {
    const std::size_t lead = nd - s->size();
    for (std::size_t i = 0; i < s->size(); ++i) {
      const int64_t v = (*s)[i];
      int64_t& o = out[lead + i];
      if (v == o || v == 1) continue;
      if (o == 1) {
        o = v;
      } else {
        ok = false;
      }
    }
  }
  if (!ok) {
    std::string list;
    for (const Shape* s : shapes) list += (list.empty() ? "" : ", ") + shape_str(*s);
    LMF_CHECK(false, op, ": shapes ", list, " do not broadcast (aligned from the right, each dim must be "
              "equal or 1; at most ", kernels::kMaxBroadcastDims, " dims)");
  }
  return out;
}

kernels::BroadcastLayout broadcast_layout(const Shape& out_shape, std::initializer_list<const Tensor*> operands) {
  kernels::BroadcastLayout l;
  l.nd = static_cast<int>(out_shape.size());
  for (int d = 0; d < l.nd; ++d) l.shape[d] = out_shape[d];
  int k = 0;
  for (const Tensor* t : operands) {
    const int lead = l.nd - t->dim();
    for (int d = 0; d < t->dim(); ++d)
      l.strides[k][lead + d] = t->shape()[d] == 1 ? 0 : t->strides()[d];
    ++k;
  }
  return l;
}

Tensor sum_to_shape(const Tensor& g, const Shape& target) {
  if (g.shape() == target) return g;
  const Shape& full = g.shape();
  LMF_CHECK(full.size() <= static_cast<std::size_t>(kernels::kMaxBroadcastDims), "sum_to_shape: ",
            shape_str(full), " has more than ", kernels::kMaxBroadcastDims, " dims");
  const Shape strides = contiguous_strides(full);
  kernels::ReduceLayout l;
  const int lead = static_cast<int>(full.size() - target.size());
  for (int d = 0; d < static_cast<int>(full.size()); ++d) {
    const int64_t td = d < lead ? 1 : target[d - lead];
    if (full[d] == 1) continue;
    if (td == full[d]) {
      l.kept_shape[l.nk] = full[d];
      l.kept_stride[l.nk++] = strides[d];
    } else {
      l.red_shape[l.nr] = full[d];
      l.red_stride[l.nr++] = strides[d];
    }
  }
  Tensor out = Tensor::empty(target, DType::f32, g.device());
  if (out.numel() == 0) return out;
  switch (g.device().type) {
    case DeviceType::cpu: cpu::sum_to(out.data<float>(), g.data<float>(), l); break;
    case DeviceType::cuda: cuda::sum_to(g.device(), out.data<float>(), g.data<float>(), l); break;
  }
  return out;
}

}  // namespace lmf::ops_detail
