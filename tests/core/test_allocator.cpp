// The caching allocator's private pools (the memory side of CUDA graph capture), exercised on the
// CPU allocator, which keeps the same books as a GPU's: blocks taken or freed while a pool is
// active come back at the same addresses to the next activation, serve nothing else meanwhile,
// and return to the shared cache when the pool is released.
#include <catch2/catch.hpp>

#include "core/private_pool.h"
#include "lmforge/core/allocator.h"

using lmf::Device;

namespace {

const Device cpu = Device::cpu();

// Ends the pool and releases it even when a check fails, so later tests see a clean allocator.
struct PoolGuard {
  uint64_t pool = lmf::detail::create_private_pool(cpu);
  ~PoolGuard() { lmf::detail::release_private_pool(cpu, pool); }
};

}  // namespace

TEST_CASE("blocks of a private pool come back to its next activation and to nothing else") {
  PoolGuard guard;
  lmf::detail::begin_private_pool(cpu, guard.pool);
  REQUIRE(lmf::detail::active_private_pool(cpu) == guard.pool);
  void* a = lmf::device_allocate(cpu, 100000);
  void* b = lmf::device_allocate(cpu, 50000);
  lmf::device_free(cpu, a, 100000);
  lmf::device_free(cpu, b, 50000);
  lmf::detail::end_private_pool(cpu);
  REQUIRE(lmf::detail::active_private_pool(cpu) == 0);
  REQUIRE(lmf::detail::private_pool_bytes(cpu) >= 150000);

  void* outside_a = lmf::device_allocate(cpu, 100000);
  void* outside_b = lmf::device_allocate(cpu, 50000);
  CHECK(outside_a != a);
  CHECK(outside_a != b);
  CHECK(outside_b != a);
  CHECK(outside_b != b);

  lmf::detail::begin_private_pool(cpu, guard.pool);
  void* again_a = lmf::device_allocate(cpu, 100000);
  void* again_b = lmf::device_allocate(cpu, 50000);
  lmf::device_free(cpu, again_a, 100000);
  lmf::device_free(cpu, again_b, 50000);
  lmf::detail::end_private_pool(cpu);
  CHECK(again_a == a);
  CHECK(again_b == b);
  lmf::device_free(cpu, outside_a, 100000);
  lmf::device_free(cpu, outside_b, 50000);
}

TEST_CASE("a block allocated outside a pool and freed while it is active joins the pool") {
  PoolGuard guard;
  void* before = lmf::device_allocate(cpu, 300000);
  lmf::detail::begin_private_pool(cpu, guard.pool);
  lmf::device_free(cpu, before, 300000);
  lmf::detail::end_private_pool(cpu);
  void* outside = lmf::device_allocate(cpu, 300000);
  CHECK(outside != before);
  lmf::detail::begin_private_pool(cpu, guard.pool);
  void* inside = lmf::device_allocate(cpu, 300000);
  lmf::detail::end_private_pool(cpu);
  CHECK(inside == before);
  lmf::device_free(cpu, inside, 300000);  // still the pool's, though freed outside it
  lmf::device_free(cpu, outside, 300000);
  CHECK(lmf::detail::private_pool_bytes(cpu) >= 300000);
}

TEST_CASE("releasing a pool hands its free and in-use blocks to the shared cache") {
  void* freed = nullptr;
  void* held = nullptr;
  const std::size_t pool_before = lmf::detail::private_pool_bytes(cpu);
  {
    PoolGuard guard;
    lmf::detail::begin_private_pool(cpu, guard.pool);
    freed = lmf::device_allocate(cpu, 700000);
    held = lmf::device_allocate(cpu, 900000);
    lmf::device_free(cpu, freed, 700000);
    lmf::detail::end_private_pool(cpu);
    REQUIRE(lmf::detail::private_pool_bytes(cpu) >= pool_before + 700000);
  }
  REQUIRE(lmf::detail::private_pool_bytes(cpu) == pool_before);
  void* reuse = lmf::device_allocate(cpu, 700000);
  CHECK(reuse == freed);
  lmf::device_free(cpu, held, 900000);  // the pool is gone: to the shared cache
  void* reuse_held = lmf::device_allocate(cpu, 900000);
  CHECK(reuse_held == held);
  CHECK(lmf::detail::private_pool_bytes(cpu) == pool_before);
  lmf::device_free(cpu, reuse, 700000);
  lmf::device_free(cpu, reuse_held, 900000);
}

TEST_CASE("private pools refuse what would break a capture") {
  PoolGuard guard;
  PoolGuard other;
  lmf::detail::begin_private_pool(cpu, guard.pool);
  REQUIRE_THROWS_WITH(lmf::empty_cache(cpu), Catch::Contains("empty_cache") && Catch::Contains("capture"));
  REQUIRE_THROWS_WITH(lmf::detail::begin_private_pool(cpu, other.pool), Catch::Contains("is active"));
  lmf::detail::end_private_pool(cpu);
  REQUIRE_THROWS_WITH(lmf::detail::begin_private_pool(cpu, 987654321), Catch::Contains("does not exist"));
  lmf::empty_cache(cpu);  // fine again once the pool has ended
}
