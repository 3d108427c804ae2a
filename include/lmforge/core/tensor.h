// Tensor: a cheap handle (shared ownership) to a TensorImpl holding storage, shape, strides,
// offset, dtype and device, plus the autograd fields (requires_grad, grad, the node that made it).
// Views alias storage. Math lives in free functions (lmforge/ops.h), not in this class.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/core/allocator.h"
#include "lmforge/core/device.h"
#include "lmforge/core/dtype.h"
#include "lmforge/core/error.h"
#include "lmforge/core/rng.h"

namespace lmf {

using Shape = std::vector<int64_t>;

/// "(2, 3, 4)".
std::string shape_str(const Shape& shape);
/// Product of the dimensions (1 for a scalar).
int64_t shape_numel(const Shape& shape);
/// Row-major strides of a contiguous tensor of this shape.
Shape contiguous_strides(const Shape& shape);

struct Node;  // autograd graph node (lmforge/autograd.h)

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;        ///< in elements
  int64_t offset = 0;   ///< in elements
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;   ///< accumulated gradient (leaves), same shape as the tensor
  /// Set by nn::Module::zero_grad on parameters in a gradient slab: `grad` holds no gradient yet
  /// and reads as zero. The next backward writes a parameter's first gradient instead of adding
  /// to it (no pass that clears the slab, no read of it in the weight-gradient GEMM); Tensor::grad()
  /// and nn::ParameterSlab::grads() zero whatever no backward reached before handing it out.
  bool grad_stale = false;
  std::shared_ptr<Node> grad_fn;      ///< the op that produced this tensor, if recorded
  /// Mixed precision: a parameter's bf16 copy (same shape, contiguous), written by
  /// nn::Module::refresh_bf16_copies. Products read it instead of this tensor when
  /// ComputeOptions::mixed_bf16 is set; gradients still go to this tensor's (f32) .grad.
  std::shared_ptr<TensorImpl> bf16_copy;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // --- factories ---------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  /// Copies `values` into a new CPU tensor of the given shape (and dtype, converting).
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape,
                            DType dtype = DType::f32);
  static Tensor from_vector(const std::vector<int32_t>& values, const Shape& shape);
  /// Normal(mean, std) draws from the generator (deterministic for a given generator state).
  static Tensor randn(const Shape& shape, Generator& gen, float mean = 0.f, float std = 1.f,
                      Device device = Device::cpu());
  /// Uniform [low, high) draws from the generator.
  static Tensor rand(const Shape& shape, Generator& gen, float low = 0.f, float high = 1.f,
                     Device device = Device::cpu());
  /// A view of existing storage.
  static Tensor view_of(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                        int64_t offset = 0, Shape strides = {});

  // --- metadata ----------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return checked().shape; }
  const Shape& strides() const { return checked().strides; }
  int64_t offset() const { return checked().offset; }
  /// Size of dimension `d`; negative d counts from the end.
  int64_t size(int d) const;
  int dim() const { return static_cast<int>(shape().size()); }
  int64_t numel() const { return shape_numel(shape()); }
  DType dtype() const { return checked().dtype; }
  Device device() const;
  bool is_contiguous() const;
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return checked().storage; }
  /// "Tensor(shape=(2, 3), dtype=f32, device=cpu)".
  std::string str() const;

  // --- data access (CPU) -------------------------------------------------------------------
  /// Pointer to the first element; checks the dtype. For CPU and device tensors alike.
  template <class T>
  T* data() const {
    LMF_CHECK(dtype() == dtype_of<T>(), "tensor has dtype ", dtype_name(dtype()),
              ", requested ", dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw_data());
  }
  void* raw_data() const;
  /// The single element of a one-element tensor, as float.
  float item() const;
  /// All elements in logical (row-major) order, converted to float, copied to the host.
  std::vector<float> to_vector() const;

  // --- copies and conversion ---------------------------------------------------------------
  /// This tensor if already contiguous, otherwise a contiguous copy (not recorded for autograd;
  /// use lmf::contiguous for a differentiable version).
  Tensor contiguous_copy() const;
  Tensor clone() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  /// Copies src (same shape, any dtype/device/strides) into this tensor's elements.
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(float value);
  Tensor& zero_() { return fill_(0.f); }

  // --- autograd ----------------------------------------------------------------------------
  bool requires_grad() const { return checked().requires_grad; }
  Tensor& set_requires_grad(bool value);
  /// The accumulated gradient (undefined until a backward pass reaches this tensor). A gradient
  /// zero_grad() left stale is zeroed here first, so a caller never sees one that was not written.
  Tensor grad() const;
  void set_grad(const Tensor& grad);
  /// Zeroes the gradient in place (keeps its storage; parameters' grads are slab views).
  void zero_grad();
  /// True for tensors not produced by a recorded op.
  bool is_leaf() const { return checked().grad_fn == nullptr; }
  /// Same storage, no history, requires_grad false.
  Tensor detach() const;
  /// Backpropagates from this scalar (grad 1) or with the given output gradient.
  void backward(const Tensor& grad_output = Tensor()) const;

  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  /// True when both handles refer to the same TensorImpl.
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  const TensorImpl& checked() const {
    LMF_CHECK(impl_, "use of an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

/// Copies `nbytes` between any two devices (host<->device, device<->device, host<->host).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes);

}  // namespace lmf
