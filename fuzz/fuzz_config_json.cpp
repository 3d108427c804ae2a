// libFuzzer target: Hugging Face config.json files, read as GPT-2 and as Llama-family configs.
#include "fuzz/fuzz_common.h"
#include "lmforge/core/error.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/llama.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lmf::fuzz::temp_file_with(data, size);
  try {
    lmf::io::read_gpt_config(path);
  } catch (const lmf::Error&) {
  }
  try {
    lmf::io::read_llama_config(path);
  } catch (const lmf::Error&) {
  }
  return 0;
}
