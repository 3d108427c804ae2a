// `lmforge tokenizer chat-template` driven as a user drives it: the exact rendered bytes on stdout
// (ChatML by default, a directory's own template otherwise) and one error line for bad input.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "e2e/cli_run.h"

namespace fs = std::filesystem;
using lmf::test::quote;
using lmf::test::require_clean_error;
using lmf::test::RunResult;

namespace {

RunResult chat_template(const fs::path& dir, const std::string& args, const std::string& input) {
  lmf::test::write_file(dir / "stdin.json", input);
  return lmf::test::run(quote(LMF_CLI) + " tokenizer chat-template " + args + " < " +
                            quote((dir / "stdin.json").string()),
                        dir);
}

}  // namespace

TEST_CASE("chat-template prints the rendered conversation exactly", "[cli][chat_template]") {
  fs::path dir = lmf::test::work_dir("cli", "chat_template");
  fs::path tok = dir / "tok";
  fs::create_directories(tok);
  const std::string conversation =
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Héllo\n"}]})";
  RunResult r = chat_template(dir, "--tokenizer " + quote(tok.string()), conversation);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHéllo\n<|im_end|>\n");
  r = chat_template(dir, "--add-generation-prompt --tokenizer " + quote(tok.string()), conversation);
  CHECK(r.out.size() > 22);
  CHECK(r.out.substr(r.out.size() - 22) == "<|im_start|>assistant\n");

  lmf::test::write_file(tok / "tokenizer_config.json",
                        R"({"bos_token": "<s>", "chat_template": "{{ bos_token }}{% for m in messages %})"
                        R"({% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' ~ m.role) }})"
                        R"({% endif %}[{{ m.role }}]{{ m.content | trim }}{% endfor %}"})");
  r = chat_template(dir, "--tokenizer " + quote(tok.string()),
                    R"({"messages": [{"role": "user", "content": " hi "}]})");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "<s>[user]hi");

  require_clean_error(chat_template(dir, "--tokenizer " + quote(tok.string()),
                                    R"({"messages": [{"role": "robot", "content": "x"}]})"),
                      {"tokenizer_config.json: chat_template line 1: bad role robot"});
  require_clean_error(chat_template(dir, "--tokenizer " + quote(tok.string()), "{\"messages\": ["),
                      "stdin: invalid JSON");
  require_clean_error(chat_template(dir, "--tokenizer " + quote(tok.string()),
                                    R"({"messages": [{"role": "user", "content": 1}]})"),
                      "stdin: messages[0].content must be a string");
  require_clean_error(chat_template(dir, "--tokenizer " + quote((dir / "missing").string()),
                                    R"({"messages": []})"),
                      "not a directory");
}
