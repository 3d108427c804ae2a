// `lmforge tokenize`: stdin -> stdout through a tokenizer. Encoding prints the ids on one line
// separated by single spaces; --decode reads whitespace-separated ids and prints their bytes;
// --shard decodes a token shard (checking its header and every id), to inspect prepared data.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "io/safe_file.h"
#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/data/tokenizer.h"

namespace lmf::cli {

namespace {

struct TokenizeOptions {
  std::string tokenizer;
  bool decode = false;
  bool allow_special = false;
  std::string shard;
};

std::string read_stdin() {
  std::string text;
  char buffer[1 << 16];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), stdin)) > 0) text.append(buffer, n);
  LMF_CHECK(!std::ferror(stdin), "cannot read standard input");
  return text;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::size_t pos = 0;
  while (true) {
    pos = text.find_first_not_of(" \t\r\n", pos);
    if (pos == std::string::npos) break;
    std::size_t end = text.find_first_of(" \t\r\n", pos);
    if (end == std::string::npos) end = text.size();
    std::string word = text.substr(pos, end - pos);
    char* stop = nullptr;
    errno = 0;
    long long value = std::strtoll(word.c_str(), &stop, 10);
    // The whole word must be the number: an embedded NUL must not end it early.
    LMF_CHECK(stop == word.data() + word.size() && errno == 0 && value >= INT32_MIN &&
                  value <= INT32_MAX,
              "'", io::clip(word, 40), "' (input word ", ids.size(), ") is not a token id");
    ids.push_back(static_cast<int32_t>(value));
    pos = end;
  }
  return ids;
}

void run_tokenize(const TokenizeOptions& options) {
  auto tokenizer = data::load_tokenizer(options.tokenizer);
  std::string out;
  if (!options.shard.empty()) {
    data::Shard shard(options.shard);
    shard.check_ids(tokenizer->vocab_size());
    out = tokenizer->decode(shard.read_all());
  } else if (options.decode) {
    std::string input = read_stdin();
    out = tokenizer->decode(parse_ids(input));
  } else {
    std::string input = read_stdin();
    std::vector<int32_t> ids = tokenizer->encode(input, options.allow_special);
    out.reserve(ids.size() * 6);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) out += ' ';
      out += std::to_string(ids[i]);
    }
    out += '\n';
  }
  LMF_CHECK(
      std::fwrite(out.data(), 1, out.size(), stdout) == out.size() && std::fflush(stdout) == 0,
      "cannot write standard output");
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto options = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Encode standard input to token ids (one line), or --decode ids to text");
  cmd->add_option("--tokenizer", options->tokenizer,
                  "A tokenizer JSON file, or a directory with tokenizer.json or GPT-2's files")
      ->required();
  cmd->add_flag("--decode", options->decode, "Read ids from standard input and print the text");
  cmd->add_flag("--allow-special", options->allow_special,
                "Encode special-token spellings such as <|endoftext|> as their ids");
  cmd->add_option("--shard", options->shard,
                  "Decode the tokens of a .bin shard instead of reading standard input");
  cmd->callback([options] { run_tokenize(*options); });
}

}  // namespace lmf::cli
