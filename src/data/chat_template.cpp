// Chat templates (see chat_template.h): finds a tokenizer directory's template and special tokens
// the way transformers does, and renders conversations through the Jinja subset in jinja.h with
// the variables `apply_chat_template` passes (messages, tools=None, documents=None,
// add_generation_prompt and the special tokens map).
#include "lmforge/data/chat_template.h"

#include "io/untrusted_json.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/file_util.h"
#include "data/jinja.h"
#include "lmforge/core/error.h"

namespace lmf::data {

namespace fs = std::filesystem;
using jinja::Value;

const char* const kChatmlTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

struct ChatTemplate::Impl {
  std::string source;
  std::string origin;
  jinja::Template compiled;
  std::map<std::string, std::string> special_tokens;
  std::vector<std::string> additional_special_tokens;
  bool chatml_default = false;
};

ChatTemplate::ChatTemplate(std::string source, std::string origin,
                           std::map<std::string, std::string> special_tokens,
                           std::vector<std::string> additional_special_tokens) {
  jinja::Template compiled(source, origin);
  impl_ = std::unique_ptr<Impl>(new Impl{std::move(source), std::move(origin), std::move(compiled),
                                         std::move(special_tokens),
                                         std::move(additional_special_tokens), false});
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

ChatTemplate ChatTemplate::chatml() {
  ChatTemplate t(kChatmlTemplate, "ChatML (default chat template)");
  t.impl_->chatml_default = true;
  return t;
}

namespace {

// A special token as tokenizer_config.json writes it: a string or an AddedToken object.
bool token_text(const nlohmann::json& value, std::string* text) {
  if (value.is_string()) {
    *text = value.get<std::string>();
    return true;
  }
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    *text = value["content"].get<std::string>();
    return true;
  }
  return false;
}

}  // namespace

ChatTemplate ChatTemplate::load(const std::string& tokenizer_dir) {
  fs::path dir = tokenizer_dir;
  if (fs::is_regular_file(dir)) dir = dir.parent_path();
  LMF_CHECK(fs::is_directory(dir), "--tokenizer ", tokenizer_dir, ": not a directory");
  fs::path config_path = dir / "tokenizer_config.json";
  nlohmann::json config = nlohmann::json::object();
  if (fs::exists(config_path)) {
    try {
      config = io::parse_untrusted_json(read_file(config_path.string()), config_path.string());
    } catch (const nlohmann::json::exception& e) {
      throw Error(str(config_path.string(), ": invalid JSON: ", e.what()));
    }
    LMF_CHECK(config.is_object(), config_path.string(), ": expected a JSON object");
  }
  // transformers' special_tokens_map: the named tokens that are set, plus the additional ones.
  std::map<std::string, std::string> special;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                          "cls_token", "mask_token"}) {
    std::string text;
    if (config.contains(key) && token_text(config[key], &text)) special[key] = text;
  }
  std::vector<std::string> additional;
  if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
    for (const auto& item : config["additional_special_tokens"]) {
      std::string text;
      if (token_text(item, &text)) additional.push_back(text);
    }
  }

  fs::path jinja_path = dir / "chat_template.jinja";
  if (fs::exists(jinja_path)) {
    return ChatTemplate(read_file(jinja_path.string()), jinja_path.string(), special, additional);
  }
  if (config.contains("chat_template") && !config["chat_template"].is_null()) {
    const nlohmann::json& value = config["chat_template"];
    std::string origin = config_path.string() + ": chat_template";
    if (value.is_string()) {
      return ChatTemplate(value.get<std::string>(), origin, special, additional);
    }
    LMF_CHECK(value.is_array(), origin, ": expected a string or a list of named templates");
    for (const auto& entry : value) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return ChatTemplate(entry["template"].get<std::string>(), origin + "[default]", special,
                            additional);
      }
    }
    throw Error(str(origin, ": a list of templates without one named \"default\""));
  }
  ChatTemplate t(kChatmlTemplate, "ChatML (default chat template)", special, additional);
  t.impl_->chatml_default = true;
  return t;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 const ChatRenderOptions& options) const {
  jinja::List items;
  for (const auto& m : messages) {
    Value message = Value::new_dict();
    message.dict->set("role", Value::from(m.role));
    message.dict->set("content", Value::from(m.content));
    items.push_back(std::move(message));
  }
  std::vector<std::pair<std::string, Value>> variables;
  for (const auto& [name, text] : impl_->special_tokens) variables.emplace_back(name, Value::from(text));
  if (!impl_->additional_special_tokens.empty()) {
    jinja::List extra;
    for (const auto& t : impl_->additional_special_tokens) extra.push_back(Value::from(t));
    variables.emplace_back("additional_special_tokens", Value::from(std::move(extra)));
  }
  for (const auto& [name, on] : options.flags) variables.emplace_back(name, Value::from(on));
  variables.emplace_back("messages", Value::from(std::move(items)));
  variables.emplace_back("tools", Value::none());
  variables.emplace_back("documents", Value::none());
  variables.emplace_back("add_generation_prompt", Value::from(options.add_generation_prompt));
  return impl_->compiled.render(variables);
}

const std::string& ChatTemplate::source() const { return impl_->source; }
const std::string& ChatTemplate::origin() const { return impl_->origin; }
bool ChatTemplate::is_chatml_default() const { return impl_->chatml_default; }

std::vector<ChatMessage> parse_chat_messages(std::string_view json_text, const std::string& origin) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    throw Error(str(origin, ": invalid JSON: ", what.substr(what.find(']') + 2)));
  }
  LMF_CHECK(doc.is_object() && doc.contains("messages"), origin,
            ": expected one object {\"messages\": [...]}");
  const nlohmann::json& list = doc["messages"];
  LMF_CHECK(list.is_array(), origin, ": \"messages\" must be a list");
  std::vector<ChatMessage> messages;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& m = list[i];
    LMF_CHECK(m.is_object(), origin, ": messages[", i, "] must be an object");
    LMF_CHECK(m.contains("role") && m["role"].is_string(), origin, ": messages[", i,
              "].role must be a string");
    LMF_CHECK(m.contains("content") && m["content"].is_string(), origin, ": messages[", i,
              "].content must be a string");
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return messages;
}

}  // namespace lmf::data
