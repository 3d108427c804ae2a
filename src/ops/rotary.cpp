// Rotary position embedding (Hugging Face's rotate_half convention) of a (B, NH, T, HS) tensor read
// through its strides, so the (B, T, NH, HS) projections of an attention layer need no transposing
// copy: the rotated output is written contiguous (B, NH, T, HS). The tables are inputs, not
// parameters: no gradient flows to them.
#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "lmforge/ops.h"
#include "ops/op_checks.h"

namespace lmf {
using namespace ops_detail;

Tensor rotary_embedding(const Tensor& x_in, const Tensor& cos_in, const Tensor& sin_in, int64_t offset) {
  check_float("rotary_embedding", x_in, "x");
  check_f32("rotary_embedding", cos_in, "cos");
  check_f32("rotary_embedding", sin_in, "sin");
  check_same_device("rotary_embedding", x_in, "x", cos_in, "cos");
  check_same_device("rotary_embedding", x_in, "x", sin_in, "sin");
  LMF_CHECK(x_in.dim() == 4, "rotary_embedding: x must be (B, NH, T, HS), got ", shape_str(x_in.shape()));
  const int64_t b = x_in.size(0), nh = x_in.size(1), t = x_in.size(2), hs = x_in.size(3);
  LMF_CHECK(hs > 0 && hs % 2 == 0, "rotary_embedding: the head size must be even, got x ", shape_str(x_in.shape()));
  LMF_CHECK(cos_in.dim() == 2 && cos_in.size(1) == hs / 2 && sin_in.shape() == cos_in.shape(),
            "rotary_embedding: cos and sin must be (L, ", hs / 2, ") for x ", shape_str(x_in.shape()), ", got cos ",
            shape_str(cos_in.shape()), " and sin ", shape_str(sin_in.shape()));
  LMF_CHECK(offset >= 0 && offset + t <= cos_in.size(0), "rotary_embedding: positions [", offset, ", ", offset + t,
            ") exceed the table's ", cos_in.size(0), " positions");
  // Any strides on B, NH, T; the head dim must be contiguous.
  const Tensor cos = cos_in.contiguous_copy(), sin = sin_in.contiguous_copy();
  const Shape out_shape{b, nh, t, hs};
  const DType out_dtype = activation_dtype(x_in);
  Tensor out;  // (B, NH, T, HS)
  if (x_in.device().type == DeviceType::cuda) {
    // Native: x read through its strides in its own dtype, out written in out_dtype (no widened copy).
    const Tensor x = x_in.strides()[3] == 1 ? x_in : x_in.contiguous_copy();
    out = Tensor::empty(out_shape, out_dtype, x.device());
    cuda::rotary_apply_typed(x.device(), out.raw_data(), out_dtype, x.raw_data(), x.dtype(), cos.data<float>(),
                             sin.data<float>(), b, nh, t, hs, x.strides()[0], x.strides()[1], x.strides()[2], offset,
                             1.f);
  } else {
    // A bf16 x (mixed precision) is widened to a contiguous f32 copy for the f32 CPU kernel.
    const Tensor x = x_in.dtype() != DType::f32 ? x_in.to(DType::f32)
                     : x_in.strides()[3] == 1   ? x_in
                                                : x_in.contiguous_copy();
    out = Tensor::empty(out_shape, DType::f32, x.device());
    cpu::rotary_apply(out.data<float>(), x.data<float>(), cos.data<float>(), sin.data<float>(), b, nh, t, hs,
                      x.strides()[0], x.strides()[1], x.strides()[2], offset, 1.f);
    out = stored_as(out, out_dtype);
  }
  return record(out, "rotary_embedding", {x_in},
                [cos = cos.detach(), sin = sin.detach(), b, nh, t, hs, offset](const Tensor& g_in) {
                  const Tensor g = g_in.contiguous_copy();  // (B, NH, T, HS)
                  Tensor dx = Tensor::empty(g.shape(), DType::f32, g.device());
                  const int64_t sb = nh * t * hs, sh = t * hs, st = hs;
                  switch (g.device().type) {
                    case DeviceType::cpu:
                      cpu::rotary_apply(dx.data<float>(), g.data<float>(), cos.data<float>(), sin.data<float>(), b,
                                        nh, t, hs, sb, sh, st, offset, -1.f);
                      break;
                    case DeviceType::cuda:
                      cuda::rotary_apply(g.device(), dx.data<float>(), g.data<float>(), cos.data<float>(),
                                         sin.data<float>(), b, nh, t, hs, sb, sh, st, offset, -1.f);
                      break;
                  }
                  return std::vector<Tensor>{dx};
                });
}

}  // namespace lmf
