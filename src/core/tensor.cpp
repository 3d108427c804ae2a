// Tensor handle plumbing: factories, metadata, strided copies with dtype conversion, and the
// autograd fields. Strided copies walk every dim but the last with an index and stride through
// the last one, parallel over rows, which keeps transposes (attention heads) cache-friendly.
#include "lmforge/core/tensor.h"

#include <omp.h>

#include <cstring>
#include <numeric>

#ifdef LMF_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels.h"
#endif
#include "core/cuda_capture.h"

namespace lmf {

std::string shape_str(const Shape& shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + ")";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
#ifdef LMF_WITH_CUDA
  // cudaMemcpy would synchronise (and break) a capture; say which direction did it instead.
  if (src_device.is_cuda() && dst_device.is_cpu())
    detail::check_not_capturing(src_device, "a device-to-host copy (a host read: item, to_vector, to(cpu))");
  if (src_device.is_cpu() && dst_device.is_cuda())
    detail::check_not_capturing(dst_device, "a host-to-device copy (from_vector, to(cuda), copy_ from the CPU)");
  if (src_device.is_cuda() && dst_device.is_cuda()) {
    detail::check_not_capturing(src_device, "a cudaMemcpy between GPUs");
    detail::check_not_capturing(dst_device, "a cudaMemcpy between GPUs");
  }
  // A copy between host and GPU memory waits for the GPU; one within a GPU does not.
  if (dst_device.is_cpu() != src_device.is_cpu()) detail::count_cuda_host_sync();
  const cudaError_t status = cudaMemcpy(dst, src, nbytes, cudaMemcpyDefault);
  LMF_CHECK(status == cudaSuccess, "cudaMemcpy of ", nbytes, " bytes failed: ", cudaGetErrorString(status));
#else
  throw Error("copy involving a CUDA device in a build without CUDA");
#endif
}

// --- factories ---------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) LMF_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(device, shape_numel(shape) * dtype_size(dtype));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return empty(shape, dtype, device).fill_(0.f);
}
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return empty(shape, dtype, device).fill_(1.f);
}
Tensor Tensor::full(const Shape& shape, float value, DType dtype, Device device) {
  return empty(shape, dtype, device).fill_(value);
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape, DType dtype) {
  LMF_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
            values.size(), " values for shape ", shape_str(shape));
  Tensor f = empty(shape, DType::f32);
  std::memcpy(f.raw_data(), values.data(), values.size() * sizeof(float));
  return dtype == DType::f32 ? f : f.to(dtype);
}

Tensor Tensor::from_vector(const std::vector<int32_t>& values, const Shape& shape) {
  LMF_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
            values.size(), " values for shape ", shape_str(shape));
  Tensor t = empty(shape, DType::i32);
  std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, float mean, float std, Device device) {
  Tensor t = empty(shape, DType::f32);
  float* p = t.data<float>();
  const int64_t n = t.numel();
  const uint64_t key = gen.seed(), base = gen.advance(static_cast<uint64_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = mean + std * philox_normal(key, base + i);
  return device.is_cpu() ? t : t.to(device);
}

Tensor Tensor::rand(const Shape& shape, Generator& gen, float low, float high, Device device) {
  Tensor t = empty(shape, DType::f32);
  float* p = t.data<float>();
  const int64_t n = t.numel();
  const uint64_t key = gen.seed(), base = gen.advance(static_cast<uint64_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = low + (high - low) * philox_uniform(key, base + i);
  return device.is_cpu() ? t : t.to(device);
}

Tensor Tensor::view_of(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                       int64_t offset, Shape strides) {
  auto impl = std::make_shared<TensorImpl>();
  if (strides.empty()) strides = contiguous_strides(shape);
  LMF_CHECK(strides.size() == shape.size(), "view_of: strides do not match shape");
  int64_t last = offset;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) last = offset - 1;
    if (last >= offset) last += (shape[i] - 1) * strides[i];
  }
  LMF_CHECK(offset >= 0 && (last < offset ||
            static_cast<std::size_t>(last + 1) * dtype_size(dtype) <= storage->nbytes()),
            "view of shape ", shape_str(shape), " at offset ", offset, " exceeds its storage of ",
            storage->nbytes(), " bytes");
  impl->storage = std::move(storage);
  impl->shape = shape;
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

// --- metadata ----------------------------------------------------------------------------------

int64_t Tensor::size(int d) const {
  const int n = dim();
  if (d < 0) d += n;
  LMF_CHECK(d >= 0 && d < n, "dimension ", d, " out of range for shape ", shape_str(shape()));
  return shape()[d];
}

Device Tensor::device() const { return checked().storage->device(); }

bool Tensor::is_contiguous() const {
  const auto& impl = checked();
  int64_t expected = 1;
  for (int i = static_cast<int>(impl.shape.size()) - 1; i >= 0; --i) {
    if (impl.shape[i] == 1) continue;
    if (impl.strides[i] != expected) return false;
    expected *= impl.shape[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return lmf::str("Tensor(shape=", shape_str(shape()), ", dtype=", dtype_name(dtype()),
                  ", device=", device().str(), ")");
}

void* Tensor::raw_data() const {
  const auto& impl = checked();
  return static_cast<char*>(impl.storage->data()) + impl.offset * dtype_size(impl.dtype);
}

// --- strided copy with conversion (CPU) --------------------------------------------------------
namespace {

float load_as_float(const char* p, DType dtype) {
  switch (dtype) {
    case DType::f32: return *reinterpret_cast<const float*>(p);
    case DType::bf16: return static_cast<float>(*reinterpret_cast<const bf16*>(p));
    case DType::i32: return static_cast<float>(*reinterpret_cast<const int32_t*>(p));
    case DType::u16: return static_cast<float>(*reinterpret_cast<const uint16_t*>(p));
  }
  return 0.f;
}

void store_from_float(char* p, DType dtype, float v) {
  switch (dtype) {
    case DType::f32: *reinterpret_cast<float*>(p) = v; break;
    case DType::bf16: *reinterpret_cast<bf16*>(p) = bf16(v); break;
    case DType::i32: *reinterpret_cast<int32_t*>(p) = static_cast<int32_t>(v); break;
    case DType::u16: *reinterpret_cast<uint16_t*>(p) = static_cast<uint16_t>(v); break;
  }
}

// The same rounding as lmf::bf16 (nearest even, NaN kept quiet) on whole words, so the compiler
// vectorises it.
void convert_f32_to_bf16(uint16_t* dst, const float* src, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, 4);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    dst[i] = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
  }
}

void convert_bf16_to_f32(float* dst, const uint16_t* src, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &u, 4);
  }
}

template <typename Word>
void copy_elements(Word* dst, int64_t dst_stride, const Word* src, int64_t src_stride, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j * dst_stride] = src[j * src_stride];
}

// Copies src into dst elementwise in logical order; both on the CPU, same shape.
void cpu_strided_copy(const Tensor& dst, const Tensor& src) {
  const Shape& shape = dst.shape();
  const int nd = static_cast<int>(shape.size());
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  const DType sd = src.dtype(), dd = dst.dtype();
  const std::size_t ss = dtype_size(sd), ds = dtype_size(dd);
  char* dbase = static_cast<char*>(dst.raw_data());
  const char* sbase = static_cast<const char*>(src.raw_data());
  if (sd == dd && dst.is_contiguous() && src.is_contiguous()) {
    std::memcpy(dbase, sbase, n * ss);
    return;
  }
  if (dst.is_contiguous() && src.is_contiguous() && (sd == DType::f32 || sd == DType::bf16) &&
      (dd == DType::f32 || dd == DType::bf16)) {  // mixed precision's conversions: vectorised
    if (sd == DType::f32) {
      convert_f32_to_bf16(reinterpret_cast<uint16_t*>(dbase), reinterpret_cast<const float*>(sbase), n);
    } else {
      convert_bf16_to_f32(reinterpret_cast<float*>(dbase), reinterpret_cast<const uint16_t*>(sbase), n);
    }
    return;
  }
  const int64_t inner = nd ? shape[nd - 1] : 1;
  const int64_t rows = n / inner;
  const int64_t s_in = nd ? src.strides()[nd - 1] : 1, d_in = nd ? dst.strides()[nd - 1] : 1;
  const Shape& sst = src.strides();
  const Shape& dst_strides = dst.strides();
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t so = 0, doff = 0, rem = row;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = rem % shape[d];
      rem /= shape[d];
      so += i * sst[d];
      doff += i * dst_strides[d];
    }
    const char* sp = sbase + so * static_cast<int64_t>(ss);
    char* dp = dbase + doff * static_cast<int64_t>(ds);
    if (sd == dd && s_in == 1 && d_in == 1) {  // contiguous rows: one copy each
      std::memcpy(dp, sp, static_cast<std::size_t>(inner) * ss);
    } else if (sd == dd && ss == 4) {
      copy_elements(reinterpret_cast<uint32_t*>(dp), d_in, reinterpret_cast<const uint32_t*>(sp), s_in, inner);
    } else if (sd == dd && ss == 2) {
      copy_elements(reinterpret_cast<uint16_t*>(dp), d_in, reinterpret_cast<const uint16_t*>(sp), s_in, inner);
    } else {
      for (int64_t j = 0; j < inner; ++j)
        store_from_float(dp + j * d_in * static_cast<int64_t>(ds), dd,
                         load_as_float(sp + j * s_in * static_cast<int64_t>(ss), sd));
    }
  }
}

#ifdef LMF_WITH_CUDA
// Strided copies, dtype conversions and fills of GPU tensors run as kernels (kernels/copy.cu) on the
// tensor's GPU and its stream (the legacy default stream that copy_bytes' cudaMemcpy also orders
// with, or a capturing CUDA graph's stream).
class CudaDeviceScope {
 public:
  explicit CudaDeviceScope(Device device) {
    cudaGetDevice(&previous_);
    if (previous_ != device.index) cudaSetDevice(device.index);
  }
  ~CudaDeviceScope() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

kernels::ElemType elem_type(DType dtype) { return static_cast<kernels::ElemType>(static_cast<int>(dtype)); }

// dst (contiguous, same GPU and shape) = src (any strides), converting dtype.
void cuda_strided_copy(const Tensor& dst, const Tensor& src) {
  LMF_CHECK(src.dim() <= kernels::kMaxDims, "strided copy on ", src.device().str(), " supports up to ",
            kernels::kMaxDims, " dims, got shape ", shape_str(src.shape()));
  kernels::StridedLayout layout;
  layout.nd = src.dim();
  for (int d = 0; d < layout.nd; ++d) {
    layout.shape[d] = src.shape()[d];
    layout.strides[d] = src.strides()[d];
  }
  CudaDeviceScope scope(src.device());
  kernels::strided_copy(dst.raw_data(), elem_type(dst.dtype()), src.raw_data(), elem_type(src.dtype()), layout,
                        detail::cuda_stream(src.device().index));
}
#endif

}  // namespace

float Tensor::item() const {
  LMF_CHECK(numel() == 1, "item() needs a one-element tensor, got shape ", shape_str(shape()));
  return to_vector()[0];
}

std::vector<float> Tensor::to_vector() const {
  detail::check_not_capturing(device(), "Tensor::to_vector / item (a host read)");
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  Tensor f = Tensor::empty(shape(), DType::f32);
  cpu_strided_copy(f, host);
  const float* p = f.data<float>();
  return std::vector<float>(p, p + f.numel());
}

Tensor& Tensor::copy_(const Tensor& src) {
  LMF_CHECK(src.shape() == shape(), "copy_: shape ", shape_str(src.shape()), " into ",
            shape_str(shape()));
  if (device().is_cpu() && src.device().is_cpu()) {
    cpu_strided_copy(*this, src);
    return *this;
  }
#ifdef LMF_WITH_CUDA
  if (device() == src.device() && is_contiguous()) {  // on one GPU: any strides, any dtypes
    cuda_strided_copy(*this, src);
    return *this;
  }
#endif
  LMF_CHECK(dtype() == src.dtype() && is_contiguous() && src.is_contiguous(),
            "copy_ across devices needs contiguous tensors of the same dtype");
  copy_bytes(raw_data(), device(), src.raw_data(), src.device(), nbytes());
  return *this;
}

Tensor Tensor::contiguous_copy() const {
  if (is_contiguous()) return *this;
#ifdef LMF_WITH_CUDA
  if (device().is_cuda()) {
    Tensor out = empty(shape(), dtype(), device());
    cuda_strided_copy(out, *this);
    return out;
  }
#endif
  LMF_CHECK(device().is_cpu(), "contiguous copy of a strided ", device().str(), " tensor is not supported");
  Tensor out = empty(shape(), dtype(), device());
  cpu_strided_copy(out, *this);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  if (device().is_cpu()) {
    cpu_strided_copy(out, *this);
  } else {
    out.copy_(contiguous_copy());
  }
  return out;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
#ifdef LMF_WITH_CUDA
  if (device().is_cuda()) {
    Tensor out = empty(shape(), target, device());
    cuda_strided_copy(out, *this);
    return out;
  }
#endif
  LMF_CHECK(device().is_cpu(), "dtype conversion on ", device().str(), " is not supported here");
  Tensor out = empty(shape(), target);
  cpu_strided_copy(out, *this);
  return out;
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  Tensor src = contiguous_copy();
  Tensor out = empty(shape(), dtype(), target);
  copy_bytes(out.raw_data(), target, src.raw_data(), src.device(), nbytes());
  return out;
}

Tensor& Tensor::fill_(float value) {
  const int64_t n = numel();
  if (!device().is_cpu()) {
#ifdef LMF_WITH_CUDA
    if (is_contiguous()) {
      CudaDeviceScope scope(device());
      kernels::fill(raw_data(), elem_type(dtype()), value, n, detail::cuda_stream(device().index));
      return *this;
    }
#endif
    Tensor host = full(shape(), value, dtype());
    copy_(host);
    return *this;
  }
  if (is_contiguous()) {
    if (dtype() == DType::f32) {
      float* p = data<float>();
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) p[i] = value;
    } else {
      char* p = static_cast<char*>(raw_data());
      const std::size_t es = dtype_size(dtype());
      for (int64_t i = 0; i < n; ++i) store_from_float(p + i * es, dtype(), value);
    }
    return *this;
  }
  Tensor src = full(shape(), value, dtype());
  cpu_strided_copy(*this, src);
  return *this;
}

// --- autograd fields ---------------------------------------------------------------------------

Tensor& Tensor::set_requires_grad(bool value) {
  LMF_CHECK(impl_, "use of an undefined tensor");
  LMF_CHECK(!value || dtype() == DType::f32 || dtype() == DType::bf16,
            "only floating-point tensors can require gradients, got ", dtype_name(dtype()));
  impl_->requires_grad = value;
  return *this;
}

Tensor Tensor::grad() const {
  checked();
  TensorImpl& impl = *impl_;  // the tensor is const; its gradient's contents are not
  if (impl.grad_stale) {
    impl.grad_stale = false;
    if (impl.grad) Tensor(impl.grad).zero_();
  }
  return Tensor(impl.grad);
}

void Tensor::set_grad(const Tensor& grad) {
  LMF_CHECK(impl_, "use of an undefined tensor");
  LMF_CHECK(!grad.defined() || grad.shape() == shape(), "gradient of shape ",
            shape_str(grad.shape()), " for a tensor of shape ", shape_str(shape()));
  impl_->grad = grad.impl();
  impl_->grad_stale = false;
}

void Tensor::zero_grad() {
  if (!impl_) return;
  impl_->grad_stale = false;
  if (impl_->grad) Tensor(impl_->grad).zero_();
}

Tensor Tensor::detach() const {
  const auto& impl = checked();
  auto out = std::make_shared<TensorImpl>();
  out->storage = impl.storage;
  out->shape = impl.shape;
  out->strides = impl.strides;
  out->offset = impl.offset;
  out->dtype = impl.dtype;
  return Tensor(std::move(out));
}

}  // namespace lmf
