// libFuzzer target: lmforge tokenizer JSON files (char and byte-level BPE), then a round trip.
#include "fuzz/fuzz_common.h"
#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lmf::fuzz::temp_file_with(data, size);
  try {
    auto tokenizer = lmf::data::load_tokenizer(path);
    tokenizer->decode(tokenizer->encode("hello <|endoftext|> world", true));
  } catch (const lmf::Error&) {
  }
  return 0;
}
