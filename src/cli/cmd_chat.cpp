// `lmforge chat`: a multi-turn conversation with a checkpoint through its chat template, on a
// terminal (streamed, /reset, /exit) or as JSONL in and out for scripts. The KV cache keeps the
// conversation so far: each turn feeds only the text its rendering adds to what is cached.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <span>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "lmforge/core/error.h"
#include "lmforge/data/chat_template.h"
#include "lmforge/data/prepare.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/generate/generate.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/kv_cache.h"
#include "lmforge/nn/lora.h"

namespace lmf::cli {

namespace {

namespace fs = std::filesystem;

struct ChatCliOptions {
  std::string checkpoint;
  std::string tokenizer;
  std::string system;
  bool jsonl = false;
  bool interactive = false;
  int64_t max_new_tokens = 256;
  float temperature = 0.8f;
  int64_t top_k = 0;
  float top_p = 1.f;
  uint64_t seed = 1337;
};

void write_out(const std::string& text) {
  if (text.empty()) return;
  LMF_CHECK(std::fwrite(text.data(), 1, text.size(), stdout) == text.size() && std::fflush(stdout) == 0,
            "cannot write standard output");
}

// Bytes of `text` that may be printed now: not the end of an incomplete UTF-8 character, and not a
// tail that could still grow into the end-of-turn text (which is never shown).
std::size_t printable_prefix(const std::string& text, const std::string& end_text) {
  std::size_t n = text.size();
  for (std::size_t k = std::min(end_text.size(), n); k > 0; --k) {
    if (text.compare(n - k, k, end_text, 0, k) == 0) {
      n -= k;
      break;
    }
  }
  for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;
    const std::size_t length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return length > back ? n - back : n;
  }
  return n;
}

class ChatSession {
 public:
  ChatSession(const ChatCliOptions& options)
      : options_(options), template_(data::ChatTemplate::chatml()), gen_(options.seed) {
    LMF_CHECK(fs::is_directory(options.checkpoint), "--checkpoint: '", options.checkpoint, "' is not a directory");
    const std::string tok_spec = !options.tokenizer.empty() ? options.tokenizer : (fs::path(options.checkpoint) / "tokenizer.json").string();
    LMF_CHECK(!options.tokenizer.empty() || fs::exists(tok_spec), "checkpoint '", options.checkpoint,
              "' has no tokenizer.json; pass --tokenizer");
    tokenizer_ = data::load_tokenizer(tok_spec);
    template_ = data::ChatTemplate::load(tok_spec);
    model_ = io::load_model(options.checkpoint);
    if (nn::has_lora(*model_)) nn::merge_lora(*model_);
    model_->eval();
    LMF_CHECK(tokenizer_->vocab_size() <= model_->vocab_size(), "the tokenizer has ", tokenizer_->vocab_size(),
              " tokens but the model only ", model_->vocab_size(), ": they do not belong together");
    cache_ = model_->make_cache(1);
    find_end_of_turn();
    sampling_.max_new_tokens = options.max_new_tokens;
    sampling_.sampling = {options.temperature, options.top_k, options.top_p};
    sampling_.sampling.validate();
    reset();
  }

  void reset() {
    messages_.clear();
    if (!options_.system.empty()) messages_.push_back({"system", options_.system});
    cache_.clear();
    cached_text_.clear();
  }

  // A whole conversation from a script: its messages replace the session's (a --system prompt is
  // put first when it has no system message).
  void set_messages(std::vector<data::ChatMessage> messages) {
    reset();
    if (!messages.empty() && messages.front().role == "system") messages_.clear();
    messages_.insert(messages_.end(), messages.begin(), messages.end());
  }

  void add_user(const std::string& text) { messages_.push_back({"user", text}); }

  // Generates the assistant's next turn, calling `stream` with text as it becomes printable.
  std::string reply(const std::function<void(const std::string&)>& stream) {
    data::ChatRenderOptions render_options;
    render_options.add_generation_prompt = true;
    const std::string prompt = template_.render(messages_, render_options);
    // Only what this rendering adds to the cached text is fed; a template that renders earlier
    // turns differently now (or a decode that does not round-trip) starts over from position 0.
    std::vector<int32_t> fresh;
    if (!cached_text_.empty() && prompt.compare(0, cached_text_.size(), cached_text_) == 0)
      fresh = tokenizer_->encode(std::string_view(prompt).substr(cached_text_.size()), true);
    if (fresh.empty()) {
      cache_.clear();
      fresh = tokenizer_->encode(prompt, true);
    }
    LMF_CHECK(!fresh.empty(), "the chat template rendered nothing");
    LMF_CHECK(cache_.length() + static_cast<int64_t>(fresh.size()) < cache_.capacity(), "the conversation (",
              cache_.length() + static_cast<int64_t>(fresh.size()), " tokens) fills the model's context of ",
              cache_.capacity(), " tokens; start a new one (/reset)");
    std::vector<float> logits = generate::forward_step(*model_, cache_, fresh);
    cached_text_ = prompt;
    std::string text, shown;
    const auto limit = static_cast<std::size_t>(tokenizer_->vocab_size());
    for (int64_t i = 0; i < sampling_.max_new_tokens; ++i) {
      const int32_t id = generate::sample(std::span<const float>(logits.data(), limit), sampling_.sampling, gen_);
      if (id == end_id_ || id == eos_id_) break;
      const std::string piece = tokenizer_->decode({id});
      text += piece;
      const bool ended = !end_text_.empty() && text.size() >= end_text_.size() &&
                         text.compare(text.size() - end_text_.size(), end_text_.size(), end_text_) == 0;
      if (ended) text.resize(text.size() - end_text_.size());
      const std::size_t ready = ended ? text.size() : printable_prefix(text, end_text_);
      if (ready > shown.size()) {
        stream(text.substr(shown.size(), ready - shown.size()));
        shown = text.substr(0, ready);
      }
      if (ended || cache_.length() + 1 >= cache_.capacity()) break;
      logits = generate::forward_step(*model_, cache_, std::vector<int32_t>{id});
      cached_text_ += piece;
    }
    if (text.size() > shown.size()) stream(text.substr(shown.size()));
    // A reply stopped by the end-of-turn text has that text's first tokens in the cache and in
    // cached_text_, which the next rendering then continues.
    messages_.push_back({"assistant", text});
    return text;
  }

 private:
  // The end-of-turn text is what the template writes after an assistant's content (trailing
  // whitespace dropped): "<|im_end|>" for ChatML, "<|eot_id|>" for Llama 3. When it is one token,
  // generation stops on that id; otherwise (a vocabulary without it) on the text itself.
  void find_end_of_turn() {
    const std::string marker = "\x01\x02lmforge\x02\x01";
    const std::string text = template_.render({{"user", "x"}, {"assistant", marker}});
    const std::size_t at = text.find(marker);
    if (at != std::string::npos) {
      end_text_ = text.substr(at + marker.size());
      while (!end_text_.empty() && std::isspace(static_cast<unsigned char>(end_text_.back()))) end_text_.pop_back();
    }
    if (!end_text_.empty()) {
      std::vector<int32_t> ids;
      try {
        ids = tokenizer_->encode(end_text_, true);
      } catch (const Error&) {
      }
      if (ids.size() == 1) end_id_ = ids[0];
    }
    eos_id_ = tokenizer_->eot_id();
  }

  ChatCliOptions options_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  data::ChatTemplate template_;
  std::unique_ptr<nn::CausalLM> model_;
  nn::KVCache cache_;
  std::string cached_text_;  // the text whose tokens the cache holds
  std::vector<data::ChatMessage> messages_;
  std::string end_text_;
  int32_t end_id_ = -1, eos_id_ = -1;
  generate::GenerateOptions sampling_;
  Generator gen_;
};

// One conversation per line ({"messages": [...]} ending with a user turn, or {"prompt": ...}),
// one {"reply": ...} per line out. Lines are independent conversations.
void run_jsonl(ChatSession& session) {
  std::string line;
  int64_t number = 0;
  while (std::getline(std::cin, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = str("stdin:", number);
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw Error(str(where, ": not valid JSON"));
    }
    if (doc.is_object() && doc.contains("prompt") && !doc.contains("completion")) {
      LMF_CHECK(doc["prompt"].is_string(), where, ": \"prompt\" must be a string");
      session.set_messages({{"user", doc["prompt"].get<std::string>()}});
    } else {
      session.set_messages(data::parse_chat_line(line, where));
    }
    const std::string reply = session.reply([](const std::string&) {});
    write_out(nlohmann::json{{"reply", reply}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  }
}

void run_terminal(ChatSession& session) {
  std::fprintf(stderr, "lmforge chat: /reset starts over, /exit (or Ctrl-D) leaves\n");
  std::string line;
  while (true) {
    std::fprintf(stderr, "> ");
    std::fflush(stderr);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      session.reset();
      std::fprintf(stderr, "(new conversation)\n");
      continue;
    }
    if (line.empty()) continue;
    session.add_user(line);
    try {
      session.reply(write_out);
    } catch (const Error& e) {
      std::fprintf(stderr, "\nlmforge: error: %s\n", e.what());
      session.reset();
    }
    write_out("\n");
  }
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto options = std::make_shared<ChatCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "chat", "Talk with a checkpoint through its chat template (a terminal, or JSONL on stdin)");
  cmd->add_option("--checkpoint", options->checkpoint, "Checkpoint directory")->required();
  cmd->add_option("--tokenizer", options->tokenizer,
                  "Tokenizer (default: CHECKPOINT/tokenizer.json); its directory's chat template is used");
  cmd->add_option("--system", options->system, "System prompt put before the conversation");
  cmd->add_flag("--jsonl", options->jsonl,
                "Read one JSON conversation per line from stdin and write one {\"reply\": ...} per line "
                "(the default when stdin is not a terminal)");
  cmd->add_flag("--interactive", options->interactive,
                "Read turns line by line even when stdin is not a terminal (replies on stdout, one per line)");
  add_integer<int64_t>(cmd, "--max-new-tokens", options->max_new_tokens, 1, 1 << 20, "Longest reply in tokens")
      ->capture_default_str();
  add_real(cmd, "--temperature", options->temperature, 0.0, 1e6, "Softmax temperature; 0 = greedy")->capture_default_str();
  add_integer<int64_t>(cmd, "--top-k", options->top_k, 0, INT32_MAX, "Sample from the k most likely tokens; 0 = all")
      ->capture_default_str();
  add_real(cmd, "--top-p", options->top_p, 0.0, 1.0, "Sample from the smallest set of tokens with this much probability; 1 = all")
      ->capture_default_str();
  add_integer<uint64_t>(cmd, "--seed", options->seed, 0, UINT64_MAX, "Seed of the sampling generator")->capture_default_str();
  cmd->callback([options] {
    ChatSession session(*options);
    LMF_CHECK(!(options->jsonl && options->interactive), "chat: --jsonl and --interactive exclude each other");
    if (options->jsonl || (!options->interactive && !::isatty(STDIN_FILENO))) {
      run_jsonl(session);
    } else {
      run_terminal(session);
    }
  });
}

}  // namespace lmf::cli
