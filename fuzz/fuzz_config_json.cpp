// libFuzzer target: Hugging Face GPT-2 config.json files.
#include "fuzz/fuzz_common.h"
#include "lmforge/core/error.h"
#include "lmforge/io/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lmf::fuzz::temp_file_with(data, size);
  try {
    lmf::io::read_gpt_config(path);
  } catch (const lmf::Error&) {
  }
  return 0;
}
