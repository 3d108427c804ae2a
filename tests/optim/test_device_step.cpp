// DeviceStep's host-side contract, where no GPU is needed: it keeps a step's values on a GPU and
// refuses any other device with one clear line. Its decisions are tested on a GPU in
// tests/cuda/test_device_step.cpp.
#include <catch2/catch.hpp>

#include <string>

#include "lmforge/core/error.h"
#include "lmforge/optim/device_step.h"

TEST_CASE("DeviceStep on the CPU is one clear error naming the device") {
  try {
    lmf::optim::DeviceStep step(lmf::Device::cpu(), 4);
    FAIL("constructed on the CPU");
  } catch (const lmf::Error& e) {
    CHECK(std::string(e.what()).find("DeviceStep: keeps a step's values on a GPU, not on cpu") != std::string::npos);
  }
}
