// libFuzzer target: token shards (header magic, version, count against the file size).
#include "fuzz/fuzz_common.h"
#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lmf::fuzz::temp_file_with(data, size);
  try {
    lmf::data::Shard shard(path);
    shard.check_ids(50257);
  } catch (const lmf::Error&) {
  }
  return 0;
}
