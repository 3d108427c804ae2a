// libFuzzer target: JSON-lines input, read as metrics.jsonl (torn and damaged lines), and each
// line as a chat dataset conversation (`prepare --format chat`), as a chat message list and as a
// multiple-choice task example (`eval --task`).
#include "fuzz/fuzz_common.h"
#include "lmforge/core/error.h"
#include "lmforge/data/chat_template.h"
#include "lmforge/data/prepare.h"
#include "lmforge/train/run_log.h"
#include "lmforge/train/task_eval.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lmf::fuzz::temp_file_with(data, size);
  try {
    for (const std::string& line : lmf::train::read_jsonl_lines(path, [](const std::string&) {}, true)) {
      try {
        lmf::data::parse_chat_messages(line, "fuzz.jsonl");
      } catch (const lmf::Error&) {
      }
      try {
        lmf::data::parse_chat_line(line, "fuzz.jsonl:1");
      } catch (const lmf::Error&) {
      }
      try {
        lmf::train::parse_choice_example(line, "fuzz.jsonl:1");
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
