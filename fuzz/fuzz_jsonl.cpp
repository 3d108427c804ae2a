// libFuzzer target: JSON-lines input, read as metrics.jsonl (torn and damaged lines) and each
// line as a chat conversation ({"messages": [...]}).
// A JSONL dataset reader, once there is one, is fuzzed here as well: call it on `path` below.
#include "fuzz/fuzz_common.h"
#include "lmforge/core/error.h"
#include "lmforge/data/chat_template.h"
#include "lmforge/train/run_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lmf::fuzz::temp_file_with(data, size);
  try {
    for (const std::string& line : lmf::train::read_jsonl_lines(path, [](const std::string&) {}, true)) {
      try {
        lmf::data::parse_chat_messages(line, "fuzz.jsonl");
      } catch (const lmf::Error&) {
      }
    }
  } catch (const lmf::Error&) {
  }
  try {
    lmf::train::read_jsonl_lines(path);
  } catch (const lmf::Error&) {
  }
  return 0;
}
