// Ops that assemble or pick elements: cat (row copies into the joined dim), split and chunk (slices,
// so views whose gradients come from slice's backward), where (three-way broadcast, condition f32,
// nonzero = true) and gather on the last dim (i32 indices, deterministic scatter-add backward).
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/broadcast.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;
namespace {

int normalize_dim(const char* op, int dim, int nd) {
  LMF_CHECK(dim >= -nd && dim < nd, op, ": dim ", dim, " out of range for ", nd, " dims");
  return dim < 0 ? dim + nd : dim;
}

void copy_rows_on(Device device, float* dst, int64_t dst_stride, const float* src, int64_t src_stride,
                  int64_t rows, int64_t width) {
  if (rows == 0 || width == 0) return;
  switch (device.type) {
    case DeviceType::cpu: cpu::copy_rows(dst, dst_stride, src, src_stride, rows, width); break;
    case DeviceType::cuda: cuda::copy_rows(device, dst, dst_stride, src, src_stride, rows, width); break;
  }
}

}  // namespace

Tensor cat(const std::vector<Tensor>& xs, int dim) {
  LMF_CHECK(!xs.empty(), "cat: no tensors to join");
  for (std::size_t i = 0; i < xs.size(); ++i) {
    check_f32("cat", xs[i], "input");
    check_same_device("cat", xs[0], "input 0", xs[i], "a later input");
  }
  const Shape& first = xs[0].shape();
  const int nd = xs[0].dim();
  const int d = normalize_dim("cat", dim, nd);
  Shape out_shape = first;
  out_shape[d] = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Shape& s = xs[i].shape();
    bool ok = static_cast<int>(s.size()) == nd;
    for (int j = 0; ok && j < nd; ++j) ok = j == d || s[j] == first[j];
    LMF_CHECK(ok, "cat: input ", i, " has shape ", shape_str(s), ", input 0 has ", shape_str(first),
              " (all dims but ", d, " must match)");
    out_shape[d] += s[d];
  }
  int64_t outer = 1, inner = 1;
  for (int j = 0; j < d; ++j) outer *= first[j];
  for (int j = d + 1; j < nd; ++j) inner *= first[j];
  const int64_t total = out_shape[d] * inner;  // (OUTER, D_total * INNER)
  Tensor out = Tensor::empty(out_shape, DType::f32, xs[0].device());
  std::vector<int64_t> offsets, widths;
  std::vector<Shape> shapes;
  int64_t offset = 0;
  for (const Tensor& x_in : xs) {
    const Tensor x = x_in.contiguous_copy();
    const int64_t width = x.shape()[d] * inner;
    if (x.numel() > 0) copy_rows_on(x.device(), out.data<float>() + offset, total, x.data<float>(), width, outer, width);
    offsets.push_back(offset);
    widths.push_back(width);
    shapes.push_back(x.shape());
    offset += width;
  }
  std::vector<bool> need;
  for (const Tensor& x : xs) need.push_back(x.requires_grad());
  return record(out, "cat", xs, [=](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    std::vector<Tensor> grads(shapes.size());
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      if (!need[i]) continue;
      grads[i] = Tensor::empty(shapes[i], DType::f32, g.device());
      if (grads[i].numel() > 0)
        copy_rows_on(g.device(), grads[i].data<float>(), widths[i], g.data<float>() + offsets[i], total, outer, widths[i]);
    }
    return grads;
  });
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim) {
  check_defined("split", x, "x");
  const int d = normalize_dim("split", dim, x.dim());
  int64_t total = 0;
  for (int64_t s : sizes) {
    LMF_CHECK(s >= 0, "split: negative size ", s);
    total += s;
  }
  LMF_CHECK(total == x.shape()[d], "split: sizes add up to ", total, " but dim ", d, " of ",
            shape_str(x.shape()), " has ", x.shape()[d]);
  std::vector<Tensor> parts;
  int64_t start = 0;
  for (int64_t s : sizes) {
    parts.push_back(slice(x, d, start, start + s));
    start += s;
  }
  return parts;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t n, int dim) {
  check_defined("chunk", x, "x");
  LMF_CHECK(n > 0, "chunk: number of chunks must be positive, got ", n);
  const int d = normalize_dim("chunk", dim, x.dim());
  const int64_t size = x.shape()[d];
  const int64_t step = std::max<int64_t>(1, (size + n - 1) / n);  // torch.chunk: ceil(size / n) each
  std::vector<int64_t> sizes;
  for (int64_t start = 0; start < size; start += step) sizes.push_back(std::min(step, size - start));
  if (sizes.empty()) sizes.push_back(0);
  return split(x, sizes, d);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_f32("where", cond, "cond");
  check_f32("where", a, "a");
  check_f32("where", b, "b");
  check_same_device("where", cond, "cond", a, "a");
  check_same_device("where", a, "a", b, "b");
  const Shape out_shape = broadcast_shape("where", {&cond.shape(), &a.shape(), &b.shape()});
  const kernels::BroadcastLayout layout = broadcast_layout(out_shape, {&cond, &a, &b});
  Tensor out = Tensor::empty(out_shape, DType::f32, a.device());
  if (out.numel() > 0) {
    switch (a.device().type) {
      case DeviceType::cpu: cpu::where_forward(out.data<float>(), cond.data<float>(), a.data<float>(), b.data<float>(), layout); break;
      case DeviceType::cuda: cuda::where_forward(a.device(), out.data<float>(), cond.data<float>(), a.data<float>(), b.data<float>(), layout); break;
    }
  }
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  // The condition gets no gradient; the backward reads it at the same layout (g is contiguous, so
  // only the condition's strides matter).
  return record(out, "where", {a, b}, [=, c = cond.detach(), a_shape = a.shape(), b_shape = b.shape()](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    Tensor ga = need_a ? Tensor::empty(out_shape, DType::f32, g.device()) : Tensor();
    Tensor gb = need_b ? Tensor::empty(out_shape, DType::f32, g.device()) : Tensor();
    if (g.numel() > 0) {
      float* pa = need_a ? ga.data<float>() : nullptr;
      float* pb = need_b ? gb.data<float>() : nullptr;
      switch (g.device().type) {
        case DeviceType::cpu: cpu::where_backward(pa, pb, g.data<float>(), c.data<float>(), layout); break;
        case DeviceType::cuda: cuda::where_backward(g.device(), pa, pb, g.data<float>(), c.data<float>(), layout); break;
      }
    }
    return std::vector<Tensor>{need_a ? sum_to_shape(ga, a_shape) : Tensor(),
                               need_b ? sum_to_shape(gb, b_shape) : Tensor()};
  });
}

Tensor gather(const Tensor& x_in, const Tensor& index_in, int dim) {
  check_f32("gather", x_in, "x");
  check_defined("gather", index_in, "index");
  check_same_device("gather", x_in, "x", index_in, "index");
  LMF_CHECK(index_in.dtype() == DType::i32, "gather: index must be i32, got ", dtype_name(index_in.dtype()));
  const int nd = x_in.dim();
  LMF_CHECK(nd >= 1, "gather: x must have at least one dim");
  LMF_CHECK(normalize_dim("gather", dim, nd) == nd - 1, "gather: only the last dim is supported, got dim ", dim,
            " for shape ", shape_str(x_in.shape()));
  const Shape &xs = x_in.shape(), &is = index_in.shape();
  bool ok = index_in.dim() == nd;
  for (int j = 0; ok && j + 1 < nd; ++j) ok = xs[j] == is[j];
  LMF_CHECK(ok, "gather: index ", shape_str(is), " must have x's ", shape_str(xs),
            " leading dims and the same number of dims");
  const int64_t n = xs[nd - 1], k = is[nd - 1];
  const int64_t rows = n > 0 ? x_in.numel() / n : index_in.numel() / std::max<int64_t>(k, 1);
  const Tensor x = x_in.contiguous_copy(), index = index_in.contiguous_copy();
  switch (index.device().type) {
    case DeviceType::cpu: {
      const int32_t* ids = index.data<int32_t>();
      for (int64_t i = 0; i < index.numel(); ++i)
        LMF_CHECK(ids[i] >= 0 && ids[i] < n, "gather: index ", ids[i], " at position ", i,
                  " is outside [0, ", n, ") of x ", shape_str(xs));
      break;
    }
    case DeviceType::cuda:
      if (index.numel() > 0) cuda::check_ids_i32(index.device(), "gather", index.data<int32_t>(), index.numel(), n, 0);
      break;
  }
  Tensor out = Tensor::empty(is, DType::f32, x.device());
  if (out.numel() > 0) {
    switch (x.device().type) {
      case DeviceType::cpu: cpu::gather_forward(out.data<float>(), x.data<float>(), index.data<int32_t>(), rows, n, k); break;
      case DeviceType::cuda: cuda::gather_forward(x.device(), out.data<float>(), x.data<float>(), index.data<int32_t>(), rows, n, k); break;
    }
  }
  return record(out, "gather", {x_in}, [xs, rows, n, k, index](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    Tensor dx = Tensor::empty(xs, DType::f32, g.device());
    if (dx.numel() > 0) {
      switch (g.device().type) {
        case DeviceType::cpu: cpu::gather_backward(dx.data<float>(), g.data<float>(), index.data<int32_t>(), rows, n, k); break;
        case DeviceType::cuda: cuda::gather_backward(g.device(), dx.data<float>(), g.data<float>(), index.data<int32_t>(), rows, n, k); break;
      }
    }
    return std::vector<Tensor>{dx};
  });
}

}  // namespace lmf
