// Checks shared by the op layer (src/ops/*.cpp): every op names itself and the offending shapes
// or dtypes in its errors, so a failure deep inside a model says which op and which input.
#pragma once
#include <string>

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

inline void check_same_device(const char* op, const Tensor& a, const char* a_name, const Tensor& b,
                              const char* b_name) {
  LMF_CHECK(a.device() == b.device(), op, ": ", a_name, " is on ", a.device().str(), " but ",
            b_name, " is on ", b.device().str());
}

[[noreturn]] inline void no_cuda(const char* op) {
  throw Error(std::string(op) + ": CUDA backend not available in this build");
}

}  // namespace lmf::ops_detail
