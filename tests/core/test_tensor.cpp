// Tensor plumbing: factories, strided views and copies, dtype conversion, the caching allocator,
// and clear errors for misuse.
#include <catch2/catch.hpp>

#include "lmforge/core/tensor.h"
#include "lmforge/ops.h"

using lmf::DType;
using lmf::Tensor;

TEST_CASE("factories fill shapes and values") {
  Tensor z = Tensor::zeros({2, 3});
  CHECK(z.shape() == lmf::Shape{2, 3});
  CHECK(z.numel() == 6);
  CHECK(z.is_contiguous());
  for (float v : z.to_vector()) CHECK(v == 0.f);
  Tensor f = Tensor::full({4}, 2.5f);
  for (float v : f.to_vector()) CHECK(v == 2.5f);
  Tensor s = Tensor::from_vector(std::vector<float>{3.f}, {});
  CHECK(s.dim() == 0);
  CHECK(s.item() == 3.f);
}

TEST_CASE("transpose and slice are views that alias storage; contiguous copies in logical order") {
  Tensor x = Tensor::from_vector(std::vector<float>{0.f, 1.f, 2.f, 3.f, 4.f, 5.f}, {2, 3});
  Tensor t = lmf::transpose(x, 0, 1);
  CHECK(t.shape() == lmf::Shape{3, 2});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.storage() == x.storage());
  CHECK(t.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  Tensor c = lmf::contiguous(t);
  CHECK(c.is_contiguous());
  CHECK(c.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  Tensor s = lmf::slice(x, 1, 1, 3);
  CHECK(s.to_vector() == std::vector<float>{1, 2, 4, 5});
  s.fill_(9.f);
  CHECK(x.to_vector() == std::vector<float>{0, 9, 9, 3, 9, 9});
}

TEST_CASE("permute and reshape follow row-major order") {
  std::vector<float> v(24);
  for (int i = 0; i < 24; ++i) v[i] = float(i);
  Tensor x = Tensor::from_vector(v, {2, 3, 4});
  Tensor p = lmf::permute(x, {2, 0, 1});  // (4, 2, 3)
  CHECK(p.shape() == lmf::Shape{4, 2, 3});
  const auto pv = p.to_vector();
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < 3; ++c) CHECK(pv[(a * 2 + b) * 3 + c] == v[(b * 3 + c) * 4 + a]);
  Tensor r = lmf::reshape(p, {-1, 6});
  CHECK(r.shape() == lmf::Shape{4, 6});
  CHECK(r.to_vector() == pv);
  CHECK_THROWS_AS(lmf::view(p, {24}), lmf::Error);
  CHECK_THROWS_AS(lmf::reshape(x, {5, -1}), lmf::Error);
}

TEST_CASE("bf16 conversion rounds to nearest even and round-trips representable values") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.0f, -2.5f, 3.14159265f, 1e-3f}, {4});
  const auto back = x.to(DType::bf16).to(DType::f32).to_vector();
  CHECK(back[0] == 1.0f);
  CHECK(back[1] == -2.5f);
  CHECK(back[2] == Approx(3.140625f));  // 3.14159 -> nearest bf16
  CHECK(back[3] == Approx(1e-3f).epsilon(4e-3));
  CHECK(static_cast<float>(lmf::bf16(1.0f + 1.0f / 256)) == 1.0f);  // tie rounds to even
}

TEST_CASE("caching allocator reuses freed blocks instead of asking the system again") {
  const auto before = lmf::allocator_stats(lmf::Device::cpu());
  for (int i = 0; i < 10; ++i) Tensor::empty({1024, 1024});
  const auto after = lmf::allocator_stats(lmf::Device::cpu());
  CHECK(after.system_allocs - before.system_allocs <= 1);
}

TEST_CASE("misuse is a clear lmf::Error") {
  Tensor x = Tensor::zeros({2, 2});
  CHECK_THROWS_AS(x.data<int32_t>(), lmf::Error);
  CHECK_THROWS_AS(x.item(), lmf::Error);
  CHECK_THROWS_AS(lmf::slice(x, 0, 1, 3), lmf::Error);
  CHECK_THROWS_AS(lmf::transpose(x, 0, 2), lmf::Error);
  CHECK_THROWS_AS(Tensor().shape(), lmf::Error);
  CHECK_THROWS_WITH(lmf::parse_device("gpu"), Catch::Contains("invalid device 'gpu'"));
  if (!lmf::cuda_available()) CHECK_THROWS_AS(Tensor::zeros({2}, DType::f32, lmf::Device::cuda()), lmf::Error);
}
