// Checks shared by the op layer (src/ops/*.cpp): every op names itself and the offending shapes
// or dtypes in its errors, so a failure deep inside a model says which op and which input.
#pragma once
#include <string>

#include "lmforge/core/compute.h"
#include "lmforge/core/tensor.h"

namespace lmf::ops_detail {

inline void check_defined(const char* op, const Tensor& t, const char* name) {
  LMF_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
}

/// Ops compute in f32; other float dtypes must be converted by the caller.
inline void check_f32(const char* op, const Tensor& t, const char* name) {
  check_defined(op, t, name);
  LMF_CHECK(t.dtype() == DType::f32, op, ": ", name, " must be f32, got ", dtype_name(t.dtype()),
            " (shape ", shape_str(t.shape()), ")");
}

/// Ops that also take bf16 (mixed precision's activations) compute in f32 all the same.
inline void check_float(const char* op, const Tensor& t, const char* name) {
  check_defined(op, t, name);
  LMF_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::bf16, op, ": ", name, " must be f32 or bf16, got ",
            dtype_name(t.dtype()), " (shape ", shape_str(t.shape()), ")");
}

/// t contiguous and f32, for the f32 kernels: t itself when it already is (no copy, so the f32
/// path is unchanged), otherwise a converted copy (a bf16 widens exactly).
inline Tensor f32_contiguous(const Tensor& t) {
  return t.dtype() == DType::f32 ? t.contiguous_copy() : t.to(DType::f32);
}

/// The dtype an op writes for activation inputs x: bf16 when x is bf16 or the calling thread runs
/// mixed precision (ComputeOptions::mixed_bf16), f32 otherwise.
inline DType activation_dtype(const Tensor& x) {
  return x.dtype() == DType::bf16 || compute_options().mixed_bf16 ? DType::bf16 : DType::f32;
}

/// t stored as `dtype` (t itself when it already is; a rounding pass to bf16 otherwise).
inline Tensor stored_as(const Tensor& t, DType dtype) { return t.dtype() == dtype ? t : t.to(dtype); }

inline void check_same_device(const char* op, const Tensor& a, const char* a_name, const Tensor& b,
                              const char* b_name) {
  LMF_CHECK(a.device() == b.device(), op, ": ", a_name, " is on ", a.device().str(), " but ",
            b_name, " is on ", b.device().str());
}

[[noreturn]] inline void no_cuda(const char* op) {
  throw Error(std::string(op) + ": CUDA backend not available in this build");
}

}  // namespace lmf::ops_detail
