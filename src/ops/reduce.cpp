// sum and mean, of every element or over one dimension. x is viewed as (OUTER, D, INNER) around
// the reduced dim, which turns any dim into one kernel; the backward broadcasts the gradient
// back over D (times 1/D for a mean). max keeps the arg-max of each output (i32, (OUTER, INNER)) and
// routes the gradient to it alone.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;
namespace {

Tensor reduce_all(const char* op, const Tensor& x_in, bool is_mean) {
  check_f32(op, x_in, "x");
  const Tensor x = x_in.contiguous_copy();
  const int64_t n = x.numel();
  LMF_CHECK(n > 0 || !is_mean, op, ": mean of an empty tensor ", shape_str(x.shape()));
  const float factor = is_mean ? 1.0f / static_cast<float>(n) : 1.0f;
  Tensor out = Tensor::empty({}, DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: {
      const double total = cpu::sum_all(x.data<float>(), n);
      out.data<float>()[0] = static_cast<float>(is_mean ? total / n : total);
      break;
    }
    case DeviceType::cuda: cuda::sum_all(x.device(), out.data<float>(), x.data<float>(), n, factor, false); break;
  }
  return record(out, op, {x_in}, [op, factor, shape = x.shape()](const Tensor& g) {
    Tensor dx = Tensor::empty(shape, DType::f32, g.device());
    switch (g.device().type) {
      case DeviceType::cpu: cpu::fill(dx.data<float>(), g.item() * factor, dx.numel()); break;
      case DeviceType::cuda: {  // the scalar stays on the device: no host read
        const Tensor gc = g.contiguous_copy();
        cuda::broadcast_scalar(g.device(), dx.data<float>(), gc.data<float>(), factor, dx.numel());
        break;
      }
    }
    return std::vector<Tensor>{dx};
  });
}

// x's shape seen as (OUTER, D, INNER) around `dim` (negative counts from the end), and the
// reduction's output shape (D kept as 1 with keepdim, dropped otherwise).
struct DimSplit {
  int64_t outer = 1, d = 0, inner = 1;
  Shape out_shape;
};

DimSplit split_at(const char* op, const Shape& shape, int dim, bool keepdim) {
  const int nd = static_cast<int>(shape.size());
  LMF_CHECK(dim >= -nd && dim < nd, op, ": dim ", dim, " out of range for shape ", shape_str(shape));
  if (dim < 0) dim += nd;
  DimSplit s;
  for (int i = 0; i < dim; ++i) s.outer *= shape[i];
  for (int i = dim + 1; i < nd; ++i) s.inner *= shape[i];
  s.d = shape[dim];
  s.out_shape = shape;
  if (keepdim) {
    s.out_shape[dim] = 1;
  } else {
    s.out_shape.erase(s.out_shape.begin() + dim);
  }
  return s;
}

Tensor reduce_dim(const char* op, const Tensor& x_in, int dim, bool keepdim, bool is_mean) {
  check_f32(op, x_in, "x");
  const Shape& shape = x_in.shape();
  const DimSplit split = split_at(op, shape, dim, keepdim);
  const int64_t outer = split.outer, d = split.d, inner = split.inner;
  const Shape& out_shape = split.out_shape;
  LMF_CHECK(d > 0 || !is_mean, op, ": mean over an empty dim of shape ", shape_str(shape));
  const float factor = is_mean ? 1.0f / static_cast<float>(d) : 1.0f;
  const Tensor x = x_in.contiguous_copy();
  Tensor out = Tensor::empty(out_shape, DType::f32, x.device());  // (OUTER, INNER)
  switch (x.device().type) {
    case DeviceType::cpu: cpu::sum_dim_forward(out.data<float>(), x.data<float>(), outer, d, inner, factor); break;
    case DeviceType::cuda: cuda::sum_dim_forward(x.device(), out.data<float>(), x.data<float>(), outer, d, inner, factor); break;
  }
  return record(out, op, {x_in}, [op, factor, shape, outer, d, inner](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    Tensor dx = Tensor::empty(shape, DType::f32, g.device());  // (OUTER, D, INNER)
    switch (g.device().type) {
      case DeviceType::cpu: cpu::sum_dim_backward(dx.data<float>(), g.data<float>(), outer, d, inner, factor); break;
      case DeviceType::cuda: cuda::sum_dim_backward(g.device(), dx.data<float>(), g.data<float>(), outer, d, inner, factor); break;
    }
    return std::vector<Tensor>{dx};
  });
}

Tensor max_dim(const Tensor& x_in, int dim, bool keepdim) {
  check_f32("max", x_in, "x");
  const Shape& shape = x_in.shape();
  const DimSplit split = split_at("max", shape, dim, keepdim);
  const int64_t outer = split.outer, d = split.d, inner = split.inner;
  const Shape& out_shape = split.out_shape;
  LMF_CHECK(d > 0, "max: dim ", dim, " of shape ", shape_str(shape), " is empty");
  const Tensor x = x_in.contiguous_copy();
  Tensor out = Tensor::empty(out_shape, DType::f32, x.device());      // (OUTER, INNER)
  Tensor argmax = Tensor::empty(out_shape, DType::i32, x.device());   // (OUTER, INNER)
  if (out.numel() > 0) {
    switch (x.device().type) {
      case DeviceType::cpu: cpu::max_dim_forward(out.data<float>(), argmax.data<int32_t>(), x.data<float>(), outer, d, inner); break;
      case DeviceType::cuda: cuda::max_dim_forward(x.device(), out.data<float>(), argmax.data<int32_t>(), x.data<float>(), outer, d, inner); break;
    }
  }
  return record(out, "max", {x_in}, [shape, outer, d, inner, argmax](const Tensor& g_in) {
    const Tensor g = g_in.contiguous_copy();
    Tensor dx = Tensor::empty(shape, DType::f32, g.device());  // (OUTER, D, INNER)
    if (dx.numel() > 0) {
      switch (g.device().type) {
        case DeviceType::cpu: cpu::max_dim_backward(dx.data<float>(), g.data<float>(), argmax.data<int32_t>(), outer, d, inner); break;
        case DeviceType::cuda: cuda::max_dim_backward(g.device(), dx.data<float>(), g.data<float>(), argmax.data<int32_t>(), outer, d, inner); break;
      }
    }
    return std::vector<Tensor>{dx};
  });
}

}  // namespace

Tensor max(const Tensor& x, int dim, bool keepdim) { return max_dim(x, dim, keepdim); }

Tensor sum(const Tensor& x) { return reduce_all("sum", x, false); }
Tensor mean(const Tensor& x) { return reduce_all("mean", x, true); }
Tensor sum(const Tensor& x, int dim, bool keepdim) { return reduce_dim("sum", x, dim, keepdim, false); }
Tensor mean(const Tensor& x, int dim, bool keepdim) { return reduce_dim("mean", x, dim, keepdim, true); }

}  // namespace lmf
