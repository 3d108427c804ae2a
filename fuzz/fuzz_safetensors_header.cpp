// libFuzzer target: safetensors files (header length, JSON header, offsets, __metadata__).
#include "fuzz/fuzz_common.h"
#include "lmforge/core/error.h"
#include "lmforge/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lmf::fuzz::temp_file_with(data, size);
  try {
    lmf::io::read_safetensors(path);
  } catch (const lmf::Error&) {
  }
  return 0;
}
