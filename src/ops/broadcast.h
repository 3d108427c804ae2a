// NumPy broadcasting for the op layer: the broadcast shape of several operands, the strided layout
// the broadcasting kernels walk (stride 0 on broadcast dims, so no operand is ever expanded in
// memory), and the reduction of a full-shape gradient back to one operand's shape.
#pragma once
#include <initializer_list>

#include "lmforge/core/tensor.h"
#include "../../kernels/common/op_table.h"

namespace lmf::ops_detail {

/// The broadcast shape of `shapes` (aligned from the right; sizes equal or 1). Throws naming `op`
/// and every shape when they do not broadcast, or when the result has more than 8 dims.
Shape broadcast_shape(const char* op, std::initializer_list<const Shape*> shapes);

/// The layout of up to three operands over `out_shape` (each must broadcast to it); their own
/// strides are kept, so strided views are read in place.
kernels::BroadcastLayout broadcast_layout(const Shape& out_shape, std::initializer_list<const Tensor*> operands);

/// g (contiguous f32, shape `full`) summed over the dims that `target` broadcasts: a fresh tensor
/// of shape `target`, or g itself when the shapes are equal. Deterministic on every device.
Tensor sum_to_shape(const Tensor& g, const Shape& target);

}  // namespace lmf::ops_detail
