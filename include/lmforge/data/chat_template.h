// Chat templates: turning a conversation into the text a model was trained on, exactly as Hugging
// Face transformers' `apply_chat_template` renders the Jinja `chat_template` of a model's
// tokenizer_config.json. A model without a template gets ChatML.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lmf::data {

/// One turn of a conversation.
struct ChatMessage {
  std::string role;     ///< "system", "user", "assistant" (the template decides about others)
  std::string content;  ///< the text of the turn
};

/// How a conversation is rendered.
struct ChatRenderOptions {
  /// Append the template's assistant header so the model writes the next turn.
  bool add_generation_prompt = false;
  /// Extra boolean template variables (e.g. Qwen3's `enable_thinking`).
  std::map<std::string, bool> flags;
};

/// The ChatML template (`<|im_start|>role\ncontent<|im_end|>\n` per message), the default for a
/// model without a chat template.
extern const char* const kChatmlTemplate;

/// A parsed Jinja chat template with the special tokens it may refer to (`bos_token`, ...).
/// Renders with Jinja2's semantics as transformers configures it (trim_blocks, lstrip_blocks,
/// loop controls, `raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII text).
class ChatTemplate {
 public:
  /// Parses `source`; `origin` names it in errors (e.g. "DIR/tokenizer_config.json:
  /// chat_template"). `special_tokens` maps names such as "bos_token" to their text, and
  /// `additional_special_tokens` fills the variable of that name. Throws lmf::Error naming
  /// `origin` and the line on a syntax error.
  ChatTemplate(std::string source, std::string origin,
               std::map<std::string, std::string> special_tokens = {},
               std::vector<std::string> additional_special_tokens = {});
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  /// ChatML with no special tokens.
  static ChatTemplate chatml();
  /// The template of a Hugging Face tokenizer directory (a file path means its directory):
  /// `chat_template.jinja` if present, else the `chat_template` of `tokenizer_config.json` (a
  /// string, or the entry named "default" of a list of named templates), else ChatML. Special
  /// tokens come from tokenizer_config.json as transformers' special_tokens_map gives them.
  static ChatTemplate load(const std::string& tokenizer_dir);

  /// The conversation as text. Throws lmf::Error naming the origin and the template line on a
  /// template error (including the template's own `raise_exception`, e.g. for an unknown role).
  std::string render(const std::vector<ChatMessage>& messages,
                     const ChatRenderOptions& options = {}) const;

  const std::string& source() const;
  const std::string& origin() const;
  /// True when the template is the ChatML default rather than the model's own.
  bool is_chatml_default() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Reads one conversation object `{"messages": [{"role": ..., "content": ...}, ...]}`. Roles and
/// contents must be strings; `origin` names the input in errors (one lmf::Error line).
std::vector<ChatMessage> parse_chat_messages(std::string_view json_text,
                                             const std::string& origin);

}  // namespace lmf::data
