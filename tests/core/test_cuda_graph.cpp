// CudaGraph where it cannot capture: the CPU, a build without CUDA, a machine without a GPU. Each
// refuses with an lmf::Error that says why; the GPU behaviour is tests/cuda/test_cuda_graph.cpp.
#include <catch2/catch.hpp>

#include "lmforge/core/cuda_graph.h"
#include "lmforge/core/device.h"

TEST_CASE("CudaGraph refuses to capture CPU work") {
  lmf::CudaGraph graph;
  REQUIRE_THROWS_WITH(graph.capture(lmf::Device::cpu(), [] {}),
                      Catch::Contains("CudaGraph::capture") &&
                          (Catch::Contains("not a GPU") || Catch::Contains("no CUDA support")));
  CHECK_FALSE(graph.captured());
  CHECK(lmf::CudaGraph::capturing(lmf::Device::cpu()) == nullptr);
}

TEST_CASE("CudaGraph without a GPU says so, and an empty graph cannot replay") {
  lmf::CudaGraph graph;
  REQUIRE_THROWS_WITH(graph.replay(), Catch::Contains("CudaGraph::replay"));
  if (lmf::cuda_available()) return;  // the GPU side is tests/cuda/test_cuda_graph.cpp
  bool ran = false;
  REQUIRE_THROWS_WITH(graph.capture(lmf::Device::cuda(0), [&] { ran = true; }),
                      Catch::Contains("no CUDA GPU is visible") || Catch::Contains("no CUDA support"));
  CHECK_FALSE(ran);
  CHECK_FALSE(graph.captured());
}
