// ComputeScope: run settings are per thread and scoped. A scope installs its options and gives the
// previous ones back when it ends (nested scopes unwind in order), OpenMP's thread count included,
// another thread never sees them, and the matrix ops read them.
#include <catch2/catch.hpp>
#include <omp.h>

#include <thread>
#include <vector>

#include "lmforge/ops.h"

using lmf::ComputeOptions;
using lmf::ComputeScope;
using lmf::MatmulBackend;

TEST_CASE("a compute scope restores the previous options, nested scopes in order", "[compute]") {
  CHECK_FALSE(lmf::compute_options().cpu_matmul_bf16);
  CHECK(lmf::compute_options().matmul_backend == MatmulBackend::custom);
  {
    const ComputeScope outer({.cpu_matmul_bf16 = true});
    CHECK(lmf::compute_options().cpu_matmul_bf16);
    {
      const ComputeScope inner({.matmul_backend = MatmulBackend::cublas});
      CHECK_FALSE(lmf::compute_options().cpu_matmul_bf16);  // a scope installs whole options
      CHECK(lmf::compute_options().matmul_backend == MatmulBackend::cublas);
    }
    CHECK(lmf::compute_options().cpu_matmul_bf16);
    CHECK(lmf::compute_options().matmul_backend == MatmulBackend::custom);
  }
  CHECK_FALSE(lmf::compute_options().cpu_matmul_bf16);
}

TEST_CASE("attention's GPU kernel defaults to flash and is chosen per scope", "[compute]") {
  CHECK(lmf::compute_options().attention_backend == lmf::AttentionBackend::flash);
  {
    const ComputeScope scope({.attention_backend = lmf::AttentionBackend::f32});
    CHECK(lmf::compute_options().attention_backend == lmf::AttentionBackend::f32);
  }
  CHECK(lmf::compute_options().attention_backend == lmf::AttentionBackend::flash);
}

TEST_CASE("a compute scope sets OpenMP's thread count for its lifetime only", "[compute]") {
  const int before = omp_get_max_threads();
  const int wanted = before == 3 ? 2 : 3;
  {
    const ComputeScope scope({.threads = wanted});
    CHECK(omp_get_max_threads() == wanted);
    {
      const ComputeScope keep({.cpu_matmul_bf16 = true});  // threads 0: the count in force stays
      CHECK(omp_get_max_threads() == wanted);
    }
    CHECK(omp_get_max_threads() == wanted);
  }
  CHECK(omp_get_max_threads() == before);
}

TEST_CASE("compute options are per thread", "[compute]") {
  const ComputeScope scope({.cpu_matmul_bf16 = true, .matmul_backend = MatmulBackend::cublas});
  bool other_bf16 = true;
  MatmulBackend other_backend = MatmulBackend::cublas;
  std::thread([&] {
    other_bf16 = lmf::compute_options().cpu_matmul_bf16;
    other_backend = lmf::compute_options().matmul_backend;
  }).join();
  CHECK_FALSE(other_bf16);
  CHECK(other_backend == MatmulBackend::custom);
}

TEST_CASE("matmul and linear take their products' precision from the scope", "[compute][matmul]") {
  if (!lmf::cpu_matmul_bf16_available()) {
    WARN("skipped: no AVX-512 BF16 here (or LMF_GEMM_EIGEN is set)");
    return;
  }
  lmf::Generator gen(3);
  const lmf::Tensor a = lmf::Tensor::randn({64, 300}, gen), w = lmf::Tensor::randn({48, 300}, gen);
  const std::vector<float> f32 = lmf::linear(a, w).to_vector();
  std::vector<float> bf16, restored;
  {
    const ComputeScope scope({.cpu_matmul_bf16 = true});
    bf16 = lmf::linear(a, w).to_vector();
    CHECK(lmf::matmul(a, w, false, true).to_vector() == bf16);  // the same products, the same bits
  }
  restored = lmf::linear(a, w).to_vector();
  CHECK(bf16 != f32);
  CHECK(restored == f32);
}
