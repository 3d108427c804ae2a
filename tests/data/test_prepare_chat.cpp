// prepare --format chat, the loss masks it writes and the loader's conversation windows: exactly
// the assistant tokens (each turn's end-of-turn token included) are trained, no window crosses two
// conversations, and bad lines are one error naming the file and line.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lmforge/core/error.h"
#include "lmforge/data/chat_template.h"
#include "lmforge/data/loader.h"
#include "lmforge/data/prepare.h"
#include "lmforge/data/shard.h"
#include "lmforge/data/tokenizer.h"

using namespace lmf::data;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path dir = fs::path(LMF_BINARY_DIR) / "test-data" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

CharTokenizer chat_tokenizer() {
  return CharTokenizer::from_text("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ?!.,\n|<>_",
                                  {"<|im_start|>", "<|im_end|>", kEndOfText});
}

// The trained tokens of a conversation, decoded, in order (one string per run of trained tokens).
std::vector<std::string> trained_runs(const Tokenizer& tok, const ChatTokens& t) {
  std::vector<std::string> runs;
  for (std::size_t i = 0; i < t.ids.size(); ++i) {
    if (!(t.flags[i] & kMaskTrained)) continue;
    if (i == 0 || !(t.flags[i - 1] & kMaskTrained)) runs.emplace_back();
    runs.back() += tok.decode({t.ids[i]});
  }
  return runs;
}

}  // namespace

TEST_CASE("tokenize_chat trains exactly the assistant contents and their end-of-turn tokens", "[prepare_chat]") {
  const CharTokenizer tok = chat_tokenizer();
  const ChatTemplate chatml = ChatTemplate::chatml();
  const std::vector<ChatMessage> messages = {
      {"system", "be brief"}, {"user", "hi"}, {"assistant", "hello"}, {"user", "why?"}, {"assistant", "because"}};
  const ChatTokens t = tokenize_chat(chatml, tok, messages);
  REQUIRE(t.ids.size() == t.flags.size());
  CHECK(tok.decode(t.ids) == chatml.render(messages));
  CHECK(t.flags[0] == kMaskStart);
  CHECK(trained_runs(tok, t) == std::vector<std::string>{"hello<|im_end|>", "because<|im_end|>"});
  const int32_t im_end = tok.special_tokens().at("<|im_end|>");
  int64_t ends = 0;
  for (int32_t id : t.ids) ends += id == im_end;
  CHECK(ends == 5);  // the special token is one id, not its spelling
}

TEST_CASE("tokenize_chat refuses a template that rewrites earlier turns", "[prepare_chat]") {
  const CharTokenizer tok = chat_tokenizer();
  // Renders each message's position from the end, so a prefix renders differently.
  const ChatTemplate odd("{% for m in messages %}{{ m.role }}{{ messages|length - loop.index }}:{{ m.content }}\n"
                         "{% endfor %}",
                         "odd");
  CHECK_THROWS_WITH(tokenize_chat(odd, tok, {{"user", "a"}, {"assistant", "b"}, {"user", "c"}}),
                    Catch::Contains("odd") && Catch::Contains("cannot be located"));
}

TEST_CASE("prepare --format chat writes shards with masks, windows follow conversations", "[prepare_chat]") {
  const fs::path dir = temp_dir("prepare_chat/ok");
  const CharTokenizer tok = chat_tokenizer();
  tok.save((dir / "tok.json").string());
  write(dir / "a.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n"
        "\n"
        "{\"prompt\": \"why\", \"completion\": \"because it is so\"}\n"
        "{\"prompt\": \"val\", \"completion\": \"held out\"}\n");
  PrepareOptions o;
  o.format = "chat";
  o.inputs = {(dir / "a.jsonl").string()};
  o.out_dir = (dir / "out").string();
  o.tokenizer = (dir / "tok.json").string();
  o.val_fraction = 0.34;  // the last of three conversations
  o.progress = false;
  const PrepareResult r = prepare_dataset(o);

  const ChatTemplate chatml = ChatTemplate::chatml();
  const ChatTokens c1 = tokenize_chat(chatml, tok, {{"user", "hi"}, {"assistant", "yo"}});
  const ChatTokens c2 = tokenize_chat(chatml, tok, {{"user", "why"}, {"assistant", "because it is so"}});
  const ChatTokens c3 = tokenize_chat(chatml, tok, {{"user", "val"}, {"assistant", "held out"}});
  const std::string train_bin = (dir / "out" / "train.bin").string();
  std::vector<int32_t> ids = c1.ids;
  ids.insert(ids.end(), c2.ids.begin(), c2.ids.end());
  std::vector<uint8_t> flags = c1.flags;
  flags.insert(flags.end(), c2.flags.begin(), c2.flags.end());
  CHECK(Shard(train_bin).read_all() == ids);
  CHECK(read_mask(mask_path_for(train_bin), static_cast<int64_t>(ids.size())) == flags);
  CHECK(Shard((dir / "out" / "val.bin").string()).read_all() == c3.ids);
  CHECK(r.train_tokens == static_cast<int64_t>(ids.size()));
  const auto meta = nlohmann::json::parse(std::ifstream(dir / "out" / "meta.json"));
  CHECK(meta["kind"] == "chat");
  CHECK(meta["conversations"] == 3);

  // T = 16: c1 (about 30 tokens) and c2 each give windows starting at their own start and every T
  // tokens after it; targets past a conversation's end are -1 and inputs 0; untrained targets -1.
  LoaderOptions lo;
  lo.batch_size = 1;
  lo.block_size = 16;
  lo.order = LoaderOrder::sequential;
  DataLoader loader(train_bin, lo);
  REQUIRE(loader.masked());
  const auto n1 = static_cast<int64_t>(c1.ids.size()), n2 = static_cast<int64_t>(c2.ids.size());
  CHECK(loader.steps_per_epoch() == (n1 - 2) / 16 + 1 + (n2 - 2) / 16 + 1);
  std::vector<int32_t> in(16), tg(16);
  int64_t seen_trained = 0;
  for (int64_t w = 0; w < loader.steps_per_epoch(); ++w) {
    loader.next(in.data(), tg.data());
    const bool first_conv = w <= (n1 - 2) / 16;
    const ChatTokens& c = first_conv ? c1 : c2;
    const int64_t start = (first_conv ? w : w - (n1 - 2) / 16 - 1) * 16;
    for (int64_t t = 0; t < 16; ++t) {
      const int64_t i = start + t;
      const int64_t n = static_cast<int64_t>(c.ids.size());
      CHECK(in[t] == (i < n ? c.ids[i] : 0));
      const bool trained = i + 1 < n && (c.flags[i + 1] & kMaskTrained);
      CHECK(tg[t] == (trained ? c.ids[i + 1] : -1));
      seen_trained += trained;
    }
  }
  int64_t want_trained = 0;
  for (uint8_t f : flags) want_trained += f & kMaskTrained;
  CHECK(seen_trained == want_trained);
  CHECK(meta["train"]["trained_tokens"] == want_trained);

  // mask_targets = false trains every token of a conversation, never across it.
  lo.mask_targets = false;
  DataLoader all(train_bin, lo);
  all.next(in.data(), tg.data());
  for (int64_t t = 0; t < 16; ++t) CHECK(tg[t] == c1.ids[t + 1]);
}

TEST_CASE("prepare --format chat names the file and line of a bad conversation", "[prepare_chat]") {
  const fs::path dir = temp_dir("prepare_chat/bad");
  const CharTokenizer tok = chat_tokenizer();
  tok.save((dir / "tok.json").string());
  PrepareOptions o;
  o.format = "chat";
  o.out_dir = (dir / "out").string();
  o.tokenizer = (dir / "tok.json").string();
  o.progress = false;
  const std::string good = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
  auto fails_with = [&](const std::string& second_line, const std::string& what) {
    write(dir / "in.jsonl", good + second_line + "\n");
    o.inputs = {(dir / "in.jsonl").string()};
    CHECK_THROWS_WITH(prepare_dataset(o), Catch::StartsWith((dir / "in.jsonl").string() + ":2: ") &&
                                              Catch::Contains(what));
    CHECK_FALSE(fs::exists(dir / "out"));
  };
  fails_with("{\"messages\": [", "not valid JSON");
  fails_with("{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "unknown role \"robot\"");
  fails_with("{\"messages\": [{\"role\": \"user\"}]}", "messages[0]");
  fails_with("[1, 2]", "expected an object");
  fails_with("{\"prompt\": \"only\"}", "completion");
  // A template error (the template's own raise_exception) names the line, the template and its line.
  write(dir / "tokenizer_config.json",
        "{\"chat_template\": \"{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('no system turns') }}{% endif %}{{ m.content }}{% endfor %}\"}");
  fails_with("{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}", "no system turns");
  fs::remove(dir / "tokenizer_config.json");
  o.tokenizer = "char";
  write(dir / "in.jsonl", good);
  CHECK_THROWS_WITH(prepare_dataset(o), Catch::Contains("needs a tokenizer"));
}

TEST_CASE("a loss mask is validated against its shard", "[prepare_chat]") {
  const fs::path dir = temp_dir("prepare_chat/mask");
  const std::string shard = (dir / "d.bin").string();
  write_shard(shard, {1, 2, 3, 4}, TokenWidth::u16);
  auto mask = [&](std::vector<uint8_t> flags) {
    MaskWriter w(mask_path_for(shard));
    w.write(flags.data(), flags.size());
    w.finish();
  };
  LoaderOptions lo;
  lo.block_size = 2;
  mask({kMaskStart, 0, kMaskTrained});
  CHECK_THROWS_WITH(DataLoader(shard, lo), Catch::Contains("d.bin.mask") && Catch::Contains("3 flags") &&
                                               Catch::Contains("4 tokens"));
  mask({0, 0, kMaskTrained, 0});
  CHECK_THROWS_WITH(DataLoader(shard, lo), Catch::Contains("token 0 must start a conversation"));
  mask({kMaskStart, 0, kMaskStart | kMaskTrained, 0});
  CHECK_THROWS_WITH(DataLoader(shard, lo), Catch::Contains("token 2 starts a conversation"));
  mask({kMaskStart, kMaskTrained, kMaskStart, kMaskTrained});
  DataLoader ok(shard, lo);
  CHECK(ok.steps_per_epoch() == 2);  // two conversations of two tokens, one window each
  // A second shard without a mask: all or none.
  write_shard((dir / "e.bin").string(), {1, 2, 3}, TokenWidth::u16);
  CHECK_THROWS_WITH(DataLoader(dir.string(), lo), Catch::Contains("1 of 2 shards have a loss mask"));
}

TEST_CASE("a char corpus tokenizer reserves ChatML's markers for later chat fine-tuning", "[prepare_chat]") {
  const fs::path dir = temp_dir("prepare_chat/reserve");
  write(dir / "corpus.txt", "a fortune for the user and the assistant: look <up>|down.\n");
  PrepareOptions plain;
  plain.inputs = {(dir / "corpus.txt").string()};
  plain.out_dir = (dir / "plain").string();
  plain.eot = true;
  plain.progress = false;
  const PrepareResult without = prepare_dataset(plain);
  PrepareOptions reserved = plain;
  reserved.out_dir = (dir / "reserved").string();
  reserved.special_tokens = {"<|im_start|>", "<|im_end|>"};
  const PrepareResult with = prepare_dataset(reserved);

  // The characters and <|endoftext|> keep their ids (the token shards are identical); the markers
  // take the next two ids, and the corpus text "<up>|" stays characters.
  CHECK(with.vocab_size == without.vocab_size + 2);
  CHECK(Shard((dir / "reserved" / "train.bin").string()).read_all() ==
        Shard((dir / "plain" / "train.bin").string()).read_all());
  const auto old_tok = load_tokenizer((dir / "plain" / "tokenizer.json").string());
  const auto tok = load_tokenizer((dir / "reserved" / "tokenizer.json").string());
  const int32_t n_chars = static_cast<int32_t>(without.vocab_size) - 1;
  CHECK(tok->eot_id() == old_tok->eot_id());
  CHECK(tok->eot_id() == n_chars);
  CHECK(tok->special_tokens().at("<|im_start|>") == n_chars + 1);
  CHECK(tok->special_tokens().at("<|im_end|>") == n_chars + 2);
  CHECK(tok->encode("<|im_start|>up<|im_end|>", true) ==
        std::vector<int32_t>{n_chars + 1, tok->encode("u")[0], tok->encode("p")[0], n_chars + 2});

  // With the markers, the corpus tokenizer prepares chat data; without them it is refused.
  write(dir / "chat.jsonl", "{\"prompt\": \"up\", \"completion\": \"down.\"}\n");
  PrepareOptions chat;
  chat.format = "chat";
  chat.inputs = {(dir / "chat.jsonl").string()};
  chat.val_fraction = 0.0;
  chat.progress = false;
  chat.tokenizer = (dir / "reserved" / "tokenizer.json").string();
  chat.out_dir = (dir / "chat").string();
  const PrepareResult r = prepare_dataset(chat);
  // <|im_start|> user \n u p <|im_end|> \n <|im_start|> assistant \n d o w n . <|im_end|> \n
  CHECK(r.train_tokens == 1 + 5 + 2 + 1 + 1 + 1 + 10 + 5 + 1 + 1);
  chat.tokenizer = (dir / "plain" / "tokenizer.json").string();
  chat.out_dir = (dir / "chat2").string();
  CHECK_THROWS_WITH(prepare_dataset(chat), Catch::Contains("needs <|im_start|> as a special token") &&
                                                Catch::Contains("--special-token"));
  CHECK_FALSE(fs::exists(dir / "chat2"));
}

TEST_CASE("--special-token is refused where it cannot apply", "[prepare_chat]") {
  const fs::path dir = temp_dir("prepare_chat/reserve_bad");
  write(dir / "corpus.txt", "a|b\n");
  PrepareOptions o;
  o.inputs = {(dir / "corpus.txt").string()};
  o.out_dir = (dir / "out").string();
  o.progress = false;
  o.special_tokens = {"|"};  // a character of the corpus
  CHECK_THROWS_WITH(prepare_dataset(o), Catch::Contains("'|' is a character of the corpus"));
  o.special_tokens = {"<|im_end|>"};
  const CharTokenizer tok = chat_tokenizer();
  tok.save((dir / "tok.json").string());
  o.tokenizer = (dir / "tok.json").string();
  CHECK_THROWS_WITH(prepare_dataset(o), Catch::Contains("--special-token applies to the char tokenizer"));
  CHECK_FALSE(fs::exists(dir / "out"));
}
