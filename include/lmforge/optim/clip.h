// Global-norm gradient clipping with torch.nn.utils.clip_grad_norm_ semantics. The slab overload
// is one reduction over the gradient slab, the form the trainer uses every step.
#pragma once
#include <cstdint>
#include <vector>

#include "lmforge/core/tensor.h"
#include "lmforge/nn/module.h"

namespace lmf::optim {

/// Sum of squares of n floats, accumulated in double over a fixed number of chunks combined in
/// order, so the result is bit-identical for any thread count and from run to run.
double sum_of_squares(const float* data, int64_t n);
/// The same for a tensor on any device: the form above for a contiguous f32 CPU tensor, one
/// deterministic reduction on a GPU (reading the result back waits for the GPU). 0 when empty.
double sum_of_squares(const Tensor& t);

/// L2 norm over every element of every gradient (accumulated in double).
double grad_norm(const nn::ParameterSlab& slab);
double grad_norm(const std::vector<Tensor>& params);

/// Computes the total L2 norm of all gradients; when max_norm / (total + 1e-6) < 1 scales every
/// gradient by that factor. Returns the total norm before clipping (NaN/Inf pass through
/// unclipped so that the caller can detect them). Parameters without a gradient are skipped.
double clip_grad_norm(const nn::ParameterSlab& slab, double max_norm);
/// The factor clip_grad_norm would scale the gradients by: max_norm / (norm + 1e-6) when that is
/// below 1, else 1 (also for a NaN/Inf norm). Pass it to AdamW::step to clip inside the update.
float clip_factor(double norm, double max_norm);
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace lmf::optim
