// libFuzzer target: Hugging Face tokenizer.json (normalizers, regex pre-tokenizers, BPE with
// byte fallback, decoders) with an optional tokenizer_config.json after a "\n--\n" line; a
// tokenizer that loads then encodes and decodes text in several scripts.
#include "fuzz/fuzz_common.h"
#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [tokenizer, config] = lmf::fuzz::split_two(data, size);
  const std::string path = lmf::fuzz::write_temp("tokenizer.json", tokenizer);
  const std::string config_path = lmf::fuzz::temp_dir() + "/tokenizer_config.json";
  if (config.empty()) {
    ::unlink(config_path.c_str());
  } else {
    lmf::fuzz::write_temp("tokenizer_config.json", config);
  }
  try {
    auto tok = lmf::data::load_tokenizer(path);
    const std::string text =
        "Hello <s> world</s>  12345 don't\n\t\xC3\xA9t\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC "
        "\xF0\x9F\x98\x80 \xE2\x96\x81x <|endoftext|> \xD0\xBF\xD1\x80\xD0\xB8";
    tok->decode(tok->encode(text, true));
    tok->decode(tok->encode(text, false));
  } catch (const lmf::Error&) {
  }
  return 0;
}
