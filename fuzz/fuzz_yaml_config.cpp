// libFuzzer target: YAML training configs (structure pass, key table, validation).
#include <string>

#include "lmforge/core/error.h"
#include "lmforge/train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lmf::train::Config::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.yaml", {});
  } catch (const lmf::Error&) {
  }
  return 0;
}
