// View ops: new shape/strides/offset over the same storage (no copy), except reshape of a
// non-contiguous tensor and contiguous(), which copy. Backward maps the gradient back through
// the inverse view.
#include <numeric>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/broadcast.h"

namespace lmf {
namespace {

int normalize_dim(int dim, int ndim, const char* op) {
  const int d = dim < 0 ? dim + ndim : dim;
  LMF_CHECK(d >= 0 && d < ndim, op, ": dimension ", dim, " out of range for ", ndim, " dims");
  return d;
}

Tensor make_view(const Tensor& x, Shape shape, Shape strides, int64_t offset) {
  return Tensor::view_of(x.storage(), shape, x.dtype(), offset, std::move(strides));
}

Shape resolve_shape(const Tensor& x, Shape shape, const char* op) {
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < static_cast<int>(shape.size()); ++i) {
    if (shape[i] == -1) {
      LMF_CHECK(infer < 0, op, ": more than one -1 in ", shape_str(shape));
      infer = i;
    } else {
      LMF_CHECK(shape[i] >= 0, op, ": invalid dimension in ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    LMF_CHECK(known > 0 && x.numel() % known == 0, op, ": cannot infer -1 in ", shape_str(shape),
              " for ", x.numel(), " elements");
    shape[infer] = x.numel() / known;
  }
  LMF_CHECK(shape_numel(shape) == x.numel(), op, ": shape ", shape_str(shape), " has ",
            shape_numel(shape), " elements, input ", shape_str(x.shape()), " has ", x.numel());
  return shape;
}

}  // namespace

Tensor view(const Tensor& x, Shape shape) {
  LMF_CHECK(x.is_contiguous(), "view: input ", shape_str(x.shape()), " is not contiguous (use reshape)");
  shape = resolve_shape(x, std::move(shape), "view");
  Tensor out = make_view(x, shape, contiguous_strides(shape), x.offset());
  const Shape in_shape = x.shape();
  return record(out, "view", {x}, [in_shape](const Tensor& g) {
    return std::vector<Tensor>{reshape(g, in_shape)};
  });
}

Tensor reshape(const Tensor& x, Shape shape) {
  if (x.is_contiguous()) return view(x, std::move(shape));
  return view(contiguous(x), std::move(shape));
}

Tensor transpose(const Tensor& x, int dim0, int dim1) {
  const int d0 = normalize_dim(dim0, x.dim(), "transpose");
  const int d1 = normalize_dim(dim1, x.dim(), "transpose");
  Shape shape = x.shape(), strides = x.strides();
  std::swap(shape[d0], shape[d1]);
  std::swap(strides[d0], strides[d1]);
  Tensor out = make_view(x, shape, strides, x.offset());
  return record(out, "transpose", {x}, [d0, d1](const Tensor& g) {
    return std::vector<Tensor>{transpose(g, d0, d1)};
  });
}

Tensor permute(const Tensor& x, const std::vector<int>& dims) {
  const int n = x.dim();
  LMF_CHECK(static_cast<int>(dims.size()) == n, "permute: ", dims.size(), " dims for a ", n, "-d tensor");
  std::vector<int> inverse(n, -1);
  Shape shape(n), strides(n);
  for (int i = 0; i < n; ++i) {
    const int d = normalize_dim(dims[i], n, "permute");
    LMF_CHECK(inverse[d] < 0, "permute: dimension ", d, " repeated");
    inverse[d] = i;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  return record(out, "permute", {x}, [inverse](const Tensor& g) {
    return std::vector<Tensor>{permute(g, inverse)};
  });
}

Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end) {
  const int d = normalize_dim(dim, x.dim(), "slice");
  const int64_t size = x.shape()[d];
  LMF_CHECK(0 <= start && start <= end && end <= size, "slice: range [", start, ", ", end,
            ") out of bounds for dimension ", d, " of size ", size);
  Shape shape = x.shape();
  shape[d] = end - start;
  Tensor out = make_view(x, shape, x.strides(), x.offset() + start * x.strides()[d]);
  const Shape in_shape = x.shape();
  return record(out, "slice", {x}, [in_shape, d, start, end](const Tensor& g_in) {
    Tensor grad = Tensor::zeros(in_shape, g_in.dtype(), g_in.device());
    if (g_in.dtype() == DType::f32) {
      // The window as rows: (OUTER, size * INNER) with (end - start) * INNER wide pieces, a copy
      // every device does (a strided copy_ into the window is CPU-only).
      const Tensor g = g_in.contiguous_copy();
      int64_t outer = 1, inner = 1;
      for (int i = 0; i < d; ++i) outer *= in_shape[i];
      for (int i = d + 1; i < static_cast<int>(in_shape.size()); ++i) inner *= in_shape[i];
      const int64_t width = (end - start) * inner, stride = in_shape[d] * inner;
      if (outer > 0 && width > 0) {
        float* dst = grad.data<float>() + start * inner;
        switch (g.device().type) {
          case DeviceType::cpu: cpu::copy_rows(dst, stride, g.data<float>(), width, outer, width); break;
          case DeviceType::cuda: cuda::copy_rows(g.device(), dst, stride, g.data<float>(), width, outer, width); break;
        }
      }
      return std::vector<Tensor>{grad};
    }
    const Tensor& g = g_in;
    Tensor window = slice(grad, d, start, end);
    window.copy_(g);
    return std::vector<Tensor>{grad};
  });
}

Tensor expand(const Tensor& x, Shape shape) {
  const int nd = static_cast<int>(shape.size());
  LMF_CHECK(nd >= x.dim(), "expand: target ", shape_str(shape), " has fewer dims than the input ",
            shape_str(x.shape()));
  const int lead = nd - x.dim();
  Shape strides(nd, 0);
  for (int i = 0; i < nd; ++i) {
    if (i < lead) {
      LMF_CHECK(shape[i] >= 0, "expand: new leading dim ", i, " of ", shape_str(shape), " must be given");
      continue;  // a new leading dim: stride 0
    }
    const int64_t have = x.shape()[i - lead];
    if (shape[i] == -1) shape[i] = have;
    LMF_CHECK(have == shape[i] || have == 1, "expand: cannot expand ", shape_str(x.shape()), " to ",
              shape_str(shape), " (dim ", i, ": size ", have, " is neither equal nor 1)");
    strides[i] = have == shape[i] ? x.strides()[i - lead] : 0;
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  const Shape in_shape = x.shape();
  return record(out, "expand", {x}, [in_shape](const Tensor& g) {
    return std::vector<Tensor>{ops_detail::sum_to_shape(g.contiguous_copy(), in_shape)};
  });
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor out = x.contiguous_copy();
  return record(out, "contiguous", {x}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

}  // namespace lmf
