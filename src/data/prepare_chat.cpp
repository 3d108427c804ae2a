// `prepare --format chat`: JSONL conversations -> token shards plus loss masks (train.bin.mask,
// val.bin.mask) that mark the tokens of assistant turns. Lines are read in order, rendered and
// tokenized in parallel batches and written in order, so the output does not depend on threads.
#include <omp.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/file_util.h"
#include "data/progress.h"
#include "io/safe_file.h"
#include "io/untrusted_json.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/core/error.h"
#include "lmforge/data/prepare.h"
#include "lmforge/data/shard.h"

namespace lmf::data {

namespace fs = std::filesystem;

std::vector<ChatMessage> parse_chat_line(std::string_view line, const std::string& where) {
  const nlohmann::json doc = io::parse_untrusted_json(line, where);
  LMF_CHECK(doc.is_object(), where, ": expected an object {\"messages\": [...]} or {\"prompt\", \"completion\"}");
  std::vector<ChatMessage> messages;
  if (!doc.contains("messages")) {
    LMF_CHECK(doc.contains("prompt") && doc.contains("completion"), where,
              ": expected \"messages\", or \"prompt\" and \"completion\"");
    LMF_CHECK(doc["prompt"].is_string() && doc["completion"].is_string(), where,
              ": \"prompt\" and \"completion\" must be strings");
    messages.push_back({"user", doc["prompt"].get<std::string>()});
    messages.push_back({"assistant", doc["completion"].get<std::string>()});
    return messages;
  }
  const nlohmann::json& list = doc["messages"];
  LMF_CHECK(list.is_array() && !list.empty(), where, ": \"messages\" must be a non-empty list");
  for (std::size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& m = list[i];
    LMF_CHECK(m.is_object() && m.contains("role") && m["role"].is_string() && m.contains("content") &&
                  m["content"].is_string(),
              where, ": messages[", i, "] must be an object with string \"role\" and \"content\"");
    std::string role = m["role"].get<std::string>();
    LMF_CHECK(role == "system" || role == "user" || role == "assistant", where, ": messages[", i,
              "]: unknown role ", io::json_brief(m["role"]), " (expected system, user or assistant)");
    messages.push_back({std::move(role), m["content"].get<std::string>()});
  }
  return messages;
}

// Assistant tokens are found by rendering prefixes of the conversation, not by searching the
// rendered text: for assistant turn k, P = render(messages[0, k), generation prompt) ends where
// the turn's content starts and Q = render(messages[0, k]) ends after its end-of-turn token.
// Every template that renders turns one after the other has P a prefix of Q and Q a prefix of
// the whole; one that rewrites earlier turns (Qwen3 drops past reasoning) is refused rather than
// guessed. The text is then tokenized segment by segment, cut at those boundaries: the prompt part
// ends exactly where `lmforge chat` stops encoding and the model starts generating, so training
// sees the tokens inference produces. Trailing whitespace after a turn's end token (ChatML's
// newline) is left untrained: the next turn's rendering adds it, not the model.
ChatTokens tokenize_chat(const ChatTemplate& chat_template, const Tokenizer& tokenizer,
                         const std::vector<ChatMessage>& messages) {
  const std::string full = chat_template.render(messages);
  std::vector<std::pair<std::size_t, std::size_t>> spans;  // trained [begin, end) of `full`
  for (std::size_t k = 0; k < messages.size(); ++k) {
    if (messages[k].role != "assistant") continue;
    const std::vector<ChatMessage> before(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(k));
    const std::vector<ChatMessage> through(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(k + 1));
    ChatRenderOptions prompt_options;
    prompt_options.add_generation_prompt = true;
    const std::string prompt = chat_template.render(before, prompt_options);
    const std::string turn = chat_template.render(through);
    LMF_CHECK(turn.compare(0, prompt.size(), prompt) == 0 && full.compare(0, turn.size(), turn) == 0,
              chat_template.origin(), ": the template does not render the conversation up to message ", k,
              " as a prefix of the whole, so its assistant tokens cannot be located");
    std::size_t end = turn.size();
    while (end > prompt.size() && (turn[end - 1] == '\n' || turn[end - 1] == ' ' || turn[end - 1] == '\r' ||
                                   turn[end - 1] == '\t'))
      --end;
    LMF_CHECK(spans.empty() || prompt.size() >= spans.back().second, chat_template.origin(),
              ": assistant turns overlap at message ", k);
    spans.emplace_back(prompt.size(), end);
  }
  ChatTokens out;
  auto append = [&](std::size_t begin, std::size_t end, bool trained) {
    if (end <= begin) return;
    const std::vector<int32_t> ids = tokenizer.encode(std::string_view(full).substr(begin, end - begin), true);
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    out.flags.insert(out.flags.end(), ids.size(), trained ? kMaskTrained : uint8_t{0});
  };
  std::size_t cursor = 0;
  for (const auto& [begin, end] : spans) {
    append(cursor, begin, false);
    append(begin, end, true);
    cursor = std::max(cursor, end);
  }
  append(cursor, full.size(), false);
  if (!out.flags.empty()) out.flags[0] = kMaskStart;  // the first token is never a target
  return out;
}

namespace {

struct Line {
  std::size_t file = 0;
  int64_t number = 0;  // 1-based
  bool val = false;
  std::string text;
  ChatTokens tokens;
  std::string error;
};

bool blank(const std::string& line) {
  return line.find_first_not_of(" \t\r") == std::string::npos;
}

// Reads a file line by line (any line length), calling emit(line, number) for each line.
template <class Emit>
void for_each_line(const std::string& path, Emit&& emit) {
  File file(path, "rb");
  std::string line;
  int64_t number = 0;
  char buffer[1 << 16];
  while (true) {
    const std::size_t n = std::fread(buffer, 1, sizeof buffer, file.get());
    LMF_CHECK(!std::ferror(file.get()), "cannot read '", path, "': ", last_error());
    for (std::size_t i = 0; i < n; ++i) {
      if (buffer[i] == '\n') {
        emit(line, ++number);
        line.clear();
      } else {
        line.push_back(buffer[i]);
      }
    }
    if (n == 0) break;
  }
  if (!line.empty()) emit(line, ++number);
}

}  // namespace

PrepareResult prepare_chat_dataset(const PrepareOptions& options) {
  LMF_CHECK(options.tokenizer != "char", "prepare --format chat needs a tokenizer (--tokenizer FILE or DIR): ",
            "a character vocabulary learned from JSON lines would hold the JSON syntax, not the chat text");
  PrepareResult result;
  const std::vector<std::string> paths = list_documents(options.inputs, &result.skipped);
  LMF_CHECK(!paths.empty(), "no input files found in the given inputs");
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(options.tokenizer);
  const ChatTemplate chat_template = ChatTemplate::load(options.tokenizer);
  // A character vocabulary would spell ChatML's markers letter by letter (a dozen tokens each, in
  // windows of a few dozen): it must hold them as special tokens, reserved when the pretraining
  // corpus was prepared, since a checkpoint's vocabulary cannot grow afterwards.
  if (tokenizer->type() == "char" && chat_template.is_chatml_default()) {
    for (const char* marker : {"<|im_start|>", "<|im_end|>"}) {
      LMF_CHECK(tokenizer->special_tokens().count(marker) != 0, options.tokenizer,
                ": a char tokenizer needs ", marker, " as a special token for the ChatML template; prepare the "
                "pretraining corpus with --special-token '<|im_start|>' --special-token '<|im_end|>'");
    }
  }
  const int64_t vocab_size = tokenizer->vocab_size();
  const TokenWidth width = token_width_for_vocab(vocab_size);

  // Pass 1: conversations per file (for the val split) and the bytes to read (for the bar).
  std::vector<int64_t> conversations(paths.size(), 0);
  int64_t total_bytes = 0;
  for (std::size_t f = 0; f < paths.size(); ++f) {
    for_each_line(paths[f], [&](const std::string& line, int64_t) {
      total_bytes += static_cast<int64_t>(line.size()) + 1;
      conversations[f] += blank(line) ? 0 : 1;
    });
  }
  int64_t all_conversations = 0;
  for (int64_t c : conversations) all_conversations += c;
  LMF_CHECK(all_conversations > 0, "the inputs hold no conversation (", paths.size(), " file(s) without a JSON line)");

  io::AtomicDir out_dir(options.out_dir);
  const fs::path out = out_dir.path();
  ShardWriter train((out / "train.bin").string(), width);
  ShardWriter val((out / "val.bin").string(), width);
  MaskWriter train_mask(mask_path_for((out / "train.bin").string()));
  MaskWriter val_mask(mask_path_for((out / "val.bin").string()));
  int64_t trained[2] = {0, 0};

  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  const int64_t batch_limit = options.chunk_bytes * threads * 2;
  std::vector<Line> batch;
  int64_t batch_bytes = 0, done_bytes = 0;
  ProgressBar progress("prepare", total_bytes, "B", options.progress);
  auto flush = [&] {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Line& line = batch[i];
      const std::string where = str(paths[line.file], ":", line.number);
      try {
        const std::vector<ChatMessage> messages = parse_chat_line(line.text, where);
        try {
          line.tokens = tokenize_chat(chat_template, *tokenizer, messages);
        } catch (const std::exception& e) {
          line.error = str(where, ": ", e.what());
        }
      } catch (const std::exception& e) {
        line.error = e.what();
      }
    }
    for (Line& line : batch) {
      if (!line.error.empty()) throw Error(line.error);
      (line.val ? val : train).write(line.tokens.ids);
      (line.val ? val_mask : train_mask).write(line.tokens.flags.data(), line.tokens.flags.size());
      for (uint8_t flag : line.tokens.flags) trained[line.val] += flag & kMaskTrained;
      done_bytes += static_cast<int64_t>(line.text.size()) + 1;
    }
    batch.clear();
    batch_bytes = 0;
    progress.update(done_bytes);
  };
  for (std::size_t f = 0; f < paths.size(); ++f) {
    const int64_t val_from = conversations[f] - static_cast<int64_t>(static_cast<double>(conversations[f]) * options.val_fraction);
    int64_t index = 0;
    for_each_line(paths[f], [&](const std::string& text, int64_t number) {
      if (blank(text)) {
        done_bytes += static_cast<int64_t>(text.size()) + 1;
        return;
      }
      batch_bytes += static_cast<int64_t>(text.size());
      batch.push_back({f, number, index++ >= val_from, text, {}, {}});
      if (batch_bytes >= batch_limit || batch.size() >= 4096) flush();
    });
  }
  flush();
  progress.finish();

  result.train_tokens = train.tokens_written();
  result.val_tokens = val.tokens_written();
  result.vocab_size = vocab_size;
  LMF_CHECK(result.train_tokens > 0, "the conversations produced no training tokens");
  train.finish();
  val.finish();
  train_mask.finish();
  val_mask.finish();
  tokenizer->save((out / "tokenizer.json").string());
  nlohmann::json sources = nlohmann::json::array();
  for (std::size_t f = 0; f < paths.size(); ++f) {
    sources.push_back({{"path", paths[f]}, {"conversations", conversations[f]}});
    result.files.push_back(paths[f]);
  }
  nlohmann::json meta = {
      {"format", "lmforge-dataset"},
      {"version", 1},
      {"kind", "chat"},
      {"tokenizer", {{"file", "tokenizer.json"}, {"type", tokenizer->type()}, {"spec", options.tokenizer}}},
      {"chat_template", chat_template.origin()},
      {"vocab_size", vocab_size},
      {"token_dtype", width == TokenWidth::u16 ? "u16" : "u32"},
      {"val_fraction", options.val_fraction},
      {"train", {{"file", "train.bin"}, {"mask", "train.bin.mask"}, {"tokens", result.train_tokens},
                 {"trained_tokens", trained[0]}}},
      {"val", {{"file", "val.bin"}, {"mask", "val.bin.mask"}, {"tokens", result.val_tokens},
               {"trained_tokens", trained[1]}}},
      {"conversations", all_conversations},
      {"sources", sources},
      {"skipped", result.skipped},
  };
  write_file_atomic((out / "meta.json").string(), meta.dump(2) + "\n");
  out_dir.commit();
  return result;
}

}  // namespace lmf::data
