// libFuzzer target: Jinja chat templates (tokenizer_config.json's chat_template), parsed and
// rendered over a fixed conversation.
#include <string>
#include <vector>

#include "lmforge/core/error.h"
#include "lmforge/data/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lmf::data::ChatTemplate tmpl(std::string(reinterpret_cast<const char*>(data), size), "fuzz.jinja",
                                 {{"bos_token", "<s>"}, {"eos_token", "</s>"}}, {"<extra>"});
    const std::vector<lmf::data::ChatMessage> messages = {
        {"system", "Be brief."}, {"user", "Hi <s>!"}, {"assistant", "Hello."}, {"user", "\xC3\xA9 {{ x }}"}};
    lmf::data::ChatRenderOptions options;
    options.add_generation_prompt = true;
    tmpl.render(messages, options);
  } catch (const lmf::Error&) {
  }
  return 0;
}
