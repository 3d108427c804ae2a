// End-to-end tests of `lmforge chat` on a tiny random GPT with a character tokenizer that has
// ChatML's special tokens: replies for a seed equal what the library generates from the rendered
// conversation (stopping at <|im_end|> or <|endoftext|>), a second turn fed through the reused KV
// cache equals a fresh computation of the whole conversation, and bad input is one error line.
#include <catch2/catch.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "e2e/cli_run.h"
#include "e2e/tiny_checkpoint.h"
#include "lmforge/data/chat_template.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/generate/generate.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/gpt.h"

namespace fs = std::filesystem;
namespace data = lmf::data;
namespace gen = lmf::generate;
using lmf::test::quote;
using lmf::test::run;
using lmf::test::RunResult;
using lmf::test::TempDir;

namespace {

data::CharTokenizer chat_tokenizer() {
  return data::CharTokenizer::from_text("abcdefghijklmnopqrstuvwxyz ?!.,\n|<>_",
                                        {"<|im_start|>", "<|im_end|>", data::kEndOfText});
}

fs::path save_checkpoint(const fs::path& dir, const data::Tokenizer& tokenizer) {
  return lmf::test::save_tiny_gpt_checkpoint(dir, tokenizer, 96, 5);
}

// The library's reply (temperature 1, drawing from `g`) to `messages` rendered with ChatML, computed
// without any cache reuse.
std::string expected_reply(const fs::path& ckpt, const data::Tokenizer& tok,
                           const std::vector<data::ChatMessage>& messages, int64_t max_new, lmf::Generator& g) {
  data::ChatRenderOptions ro;
  ro.add_generation_prompt = true;
  const std::string prompt = data::ChatTemplate::chatml().render(messages, ro);
  auto gpt = lmf::io::load_gpt(ckpt);
  gen::GenerateOptions o;
  o.max_new_tokens = max_new;
  o.sampling.temperature = 1;
  o.vocab_limit = tok.vocab_size();
  o.stop_token = tok.special_tokens().at("<|im_end|>");
  std::vector<int32_t> ids = gen::generate(*gpt, tok.encode(prompt, true), o, g);
  std::vector<int32_t> kept;
  for (int32_t id : ids) {
    if (id == o.stop_token || id == tok.eot_id()) break;
    kept.push_back(id);
  }
  return tok.decode(kept);
}

void check_one_error_line(const RunResult& r, const std::string& needle) {
  INFO("stderr: " << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.err.rfind("lmforge: error: ", 0) == 0);
  CHECK(r.err.find('\n') == r.err.size() - 1);
  CHECK(r.err.find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("chat --jsonl answers each conversation with the library's reply for the seed") {
  TempDir tmp;
  const auto tok = chat_tokenizer();
  const fs::path ckpt = save_checkpoint(tmp.path, tok);
  lmf::test::write_file(tmp.path / "in.jsonl",
                        "{\"messages\": [{\"role\": \"user\", \"content\": \"hello there\"}]}\n"
                        "\n"
                        "{\"prompt\": \"why?\"}\n");
  const RunResult r = run(quote(LMF_CLI) + " chat --checkpoint " + quote(ckpt.string()) +
                              " --temperature 1 --seed 3 --max-new-tokens 12 --system 'be kind' < " +
                              quote((tmp.path / "in.jsonl").string()),
                          tmp.path);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  lmf::Generator g(3);
  const std::string want1 = expected_reply(ckpt, tok, {{"system", "be kind"}, {"user", "hello there"}}, 12, g);
  const std::string want2 = expected_reply(ckpt, tok, {{"system", "be kind"}, {"user", "why?"}}, 12, g);
  CHECK(want1 != want2);
  CHECK(r.out == nlohmann::json{{"reply", want1}}.dump() + "\n" + nlohmann::json{{"reply", want2}}.dump() + "\n");
}

TEST_CASE("chat's second turn through the reused KV cache equals a fresh computation") {
  TempDir tmp;
  const auto tok = chat_tokenizer();
  const fs::path ckpt = save_checkpoint(tmp.path, tok);
  lmf::test::write_file(tmp.path / "in.txt", "hi\n/reset\nhi\nand then?\n/exit\nnever read\n");
  const RunResult r = run(quote(LMF_CLI) + " chat --interactive --checkpoint " + quote(ckpt.string()) +
                              " --temperature 1 --seed 7 --max-new-tokens 10 < " + quote((tmp.path / "in.txt").string()),
                          tmp.path);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  lmf::Generator g(7);
  const std::string first = expected_reply(ckpt, tok, {{"user", "hi"}}, 10, g);
  const std::string again = expected_reply(ckpt, tok, {{"user", "hi"}}, 10, g);  // after /reset
  const std::string second =
      expected_reply(ckpt, tok, {{"user", "hi"}, {"assistant", again}, {"user", "and then?"}}, 10, g);
  CHECK(!second.empty());
  CHECK(r.out == first + "\n" + again + "\n" + second + "\n");
}

TEST_CASE("chat rejects bad input with one clear error line") {
  TempDir tmp;
  const auto tok = chat_tokenizer();
  const fs::path ckpt = save_checkpoint(tmp.path, tok);
  const std::string chat = quote(LMF_CLI) + " chat --checkpoint " + quote(ckpt.string()) + " --jsonl";
  lmf::test::write_file(tmp.path / "bad.jsonl", "{\"prompt\": \"a\"}\n{\"messages\": [\n");
  check_one_error_line(run(chat + " < " + quote((tmp.path / "bad.jsonl").string()), tmp.path), "stdin:2: not valid JSON");
  lmf::test::write_file(tmp.path / "role.jsonl", "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n");
  check_one_error_line(run(chat + " < " + quote((tmp.path / "role.jsonl").string()), tmp.path), "unknown role");
  check_one_error_line(run(quote(LMF_CLI) + " chat --checkpoint " + quote((tmp.path / "nope").string()) + " < /dev/null",
                           tmp.path),
                       "not a directory");
}
