// prepare_dataset (see lmforge/data/prepare.h). Files are read once, in order, in chunks; a batch
// of chunks is tokenized in parallel with OpenMP and written in order, so memory stays bounded by
// (threads x chunk size) whatever the corpus size and the output does not depend on thread count.
#include "lmforge/data/prepare.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "data/file_util.h"
#include "io/safe_file.h"
#include "lmforge/io/checkpoint.h"
#include "data/pretokenize.h"
#include "data/progress.h"
#include "data/sha256.h"
#include "data/utf8.h"
#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/data/tokenizer.h"

namespace lmf::data {

namespace fs = std::filesystem;

PrepareResult prepare_chat_dataset(const PrepareOptions& options);  // prepare_chat.cpp

namespace {

bool looks_binary(const std::string& path) {
  File file(path, "rb");
  char buffer[8192];
  std::size_t n = std::fread(buffer, 1, sizeof(buffer), file.get());
  LMF_CHECK(!std::ferror(file.get()), "cannot read '", path, "': ", last_error());
  return std::memchr(buffer, 0, n) != nullptr;
}

bool is_hidden(const fs::path& p) {
  std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

struct Document {
  std::string path;
  int64_t size = 0;
  int64_t split = 0;  // train = [0, split), val = [split, size)
  std::string sha256;
};

struct Piece {
  bool val = false;
  bool first_of_part = false;
  std::size_t document = 0;
  int64_t offset = 0;  // of the text in its file
  std::string text;
  std::vector<int32_t> ids;
};

// The byte where a document's val part starts: (1 - val_fraction) of its size, moved back to
// the start of a UTF-8 character so no character is split between train and val.
int64_t split_point(const std::string& path, int64_t size, double val_fraction) {
  auto split = static_cast<int64_t>(std::floor(static_cast<double>(size) * (1.0 - val_fraction)));
  split = std::clamp<int64_t>(split, 0, size);
  if (split == 0 || split == size) return split;
  File file(path, "rb");
  int64_t from = std::max<int64_t>(0, split - 3);
  LMF_CHECK(std::fseek(file.get(), from, SEEK_SET) == 0, "cannot seek in '", path, "'");
  unsigned char bytes[4];
  std::size_t n = std::fread(bytes, 1, static_cast<std::size_t>(split - from + 1), file.get());
  LMF_CHECK(n == static_cast<std::size_t>(split - from + 1), "cannot read '", path, "'");
  while (split > from && (bytes[split - from] & 0xC0) == 0x80) --split;
  return split;
}

// Reads one part [begin, end) of an open file in chunks cut at safe pre-token boundaries.
template <class Emit>
void read_part(File& file, Sha256& sha, int64_t begin, int64_t end, int64_t chunk, Emit&& emit) {
  std::string carry;
  std::string data;
  int64_t pos = begin;
  int64_t carry_offset = begin;
  bool first = true;
  while (pos < end || !carry.empty()) {
    auto want = static_cast<std::size_t>(std::min<int64_t>(chunk, end - pos));
    data.resize(want);
    std::size_t n = want > 0 ? std::fread(data.data(), 1, want, file.get()) : 0;
    LMF_CHECK(n == want, "cannot read '", file.path(), "' at byte ", pos, ": ",
              std::ferror(file.get()) ? last_error() : std::string("the file got shorter"));
    sha.update(data);
    pos += static_cast<int64_t>(n);
    std::string text = std::move(carry);
    text += data;
    std::size_t cut = text.size();
    if (pos < end) {
      std::size_t target = text.size() > 8 ? text.size() - 8 : 0;
      cut = safe_split_point(text, text.size() / 2, target);
      if (cut == 0) cut = complete_utf8_prefix(text);  // tiny chunk: keep whole characters
    }
    carry = text.substr(cut);
    text.resize(cut);
    int64_t offset = carry_offset;
    carry_offset += static_cast<int64_t>(cut);
    if (!text.empty()) {
      emit(std::move(text), first, offset);
      first = false;
    }
  }
}

std::unique_ptr<Tokenizer> learn_char_tokenizer(const std::vector<Document>& docs, int64_t chunk,
                                                bool eot, const std::vector<std::string>& extra) {
  std::vector<bool> seen(0x110000, false);
  std::string buffer;
  for (const auto& doc : docs) {
    File file(doc.path, "rb");
    std::string carry;
    int64_t carry_offset = 0;
    while (true) {
      buffer.resize(static_cast<std::size_t>(chunk));
      std::size_t n = std::fread(buffer.data(), 1, buffer.size(), file.get());
      LMF_CHECK(!std::ferror(file.get()), "cannot read '", doc.path, "': ", last_error());
      buffer.resize(n);
      std::string text = carry + buffer;
      std::size_t usable = n == 0 ? text.size() : complete_utf8_prefix(text);
      for (std::size_t pos = 0; pos < usable;) {
        uint32_t cp;
        std::size_t length;
        LMF_CHECK(decode_utf8(std::string_view(text).substr(0, usable), pos, &cp, &length), "'",
                  doc.path, "': invalid UTF-8 at byte offset ",
                  carry_offset + static_cast<int64_t>(pos),
                  " (the char tokenizer needs UTF-8 text)");
        seen[cp] = true;
        pos += length;
      }
      carry = text.substr(usable);
      carry_offset += static_cast<int64_t>(usable);
      if (n == 0) break;
    }
  }
  std::vector<uint32_t> code_points;
  for (uint32_t cp = 0; cp < seen.size(); ++cp) {
    if (seen[cp]) code_points.push_back(cp);
  }
  std::vector<std::string> specials;
  if (eot) specials.emplace_back(kEndOfText);
  for (const auto& name : extra) {
    LMF_CHECK(!name.empty(), "--special-token: empty text");
    uint32_t cp;
    std::size_t length;
    LMF_CHECK(!(decode_utf8(name, 0, &cp, &length) && length == name.size() && seen[cp]), "--special-token '",
              name, "' is a character of the corpus; a special token must not be one");
    specials.push_back(name);
  }
  return std::make_unique<CharTokenizer>(std::move(code_points), specials);
}

}  // namespace

std::vector<std::string> list_documents(const std::vector<std::string>& inputs,
                                        std::vector<std::string>* skipped) {
  std::vector<std::string> out;
  std::set<fs::path> seen;
  auto add = [&](const fs::path& path, bool explicit_input) {
    fs::path canonical = fs::weakly_canonical(path);
    if (!seen.insert(canonical).second) {
      if (skipped) skipped->push_back(path.string());
      return;
    }
    if (!explicit_input && looks_binary(path.string())) {
      if (skipped) skipped->push_back(path.string());
      return;
    }
    out.push_back(path.string());
  };
  for (const auto& input : inputs) {
    std::error_code ec;
    fs::file_status status = fs::status(input, ec);
    LMF_CHECK(fs::exists(status), "input '", input, "' does not exist");
    if (fs::is_directory(status)) {
      std::vector<fs::path> files;
      auto it = fs::recursive_directory_iterator(input, ec);
      LMF_CHECK(!ec, "cannot read directory '", input, "': ", ec.message());
      for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
        LMF_CHECK(!ec, "cannot read directory '", input, "': ", ec.message());
        if (is_hidden(it->path())) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) files.push_back(it->path());
      }
      std::sort(files.begin(), files.end());
      for (const auto& f : files) add(f, false);
    } else {
      LMF_CHECK(fs::is_regular_file(status), "input '", input, "' is not a regular file");
      add(input, true);
    }
  }
  return out;
}

PrepareResult prepare_dataset(const PrepareOptions& options) {
  LMF_CHECK(!options.inputs.empty(), "prepare needs at least one --input");
  LMF_CHECK(!options.out_dir.empty(), "prepare needs an output directory");
  LMF_CHECK(options.val_fraction >= 0.0 && options.val_fraction < 1.0, "val fraction ",
            options.val_fraction, " must be in [0, 1)");
  LMF_CHECK(options.chunk_bytes >= 64, "chunk size ", options.chunk_bytes, " is too small");
  io::check_thread_count(options.threads, "threads");
  // The output directory is replaced as a whole: it must not be or hold an input, and it must be
  // absent, empty or a dataset directory written before (nothing else is ever deleted).
  for (const auto& input : options.inputs)
    LMF_CHECK(!io::path_within(options.out_dir, input) && !io::path_within(input, options.out_dir),
              "--out: '", io::clip(options.out_dir), "' must not be, contain or lie inside the input '",
              io::clip(input), "'");
  io::check_replaceable_dir(options.out_dir,
                            {"train.bin", "val.bin", "train.bin.mask", "val.bin.mask", "tokenizer.json",
                             "tokenizer_config.json", "chat_template.jinja", "meta.json"},
                            "--out");
  LMF_CHECK(options.format == "text" || options.format == "chat", "--format: '", options.format,
            "' is neither text nor chat");
  LMF_CHECK(options.special_tokens.empty() || (options.format == "text" && options.tokenizer == "char"),
            "--special-token applies to the char tokenizer learned by --format text (--tokenizer char)");
  if (options.format == "chat") return prepare_chat_dataset(options);
  PrepareResult result;
  std::vector<std::string> paths = list_documents(options.inputs, &result.skipped);
  LMF_CHECK(!paths.empty(), "no input files found in the given inputs");
  std::vector<Document> docs;
  int64_t total_bytes = 0;
  for (const auto& path : paths) {
    std::error_code ec;
    auto size = static_cast<int64_t>(fs::file_size(path, ec));
    LMF_CHECK(!ec, "cannot read the size of '", path, "': ", ec.message());
    File probe(path, "rb");  // unreadable files fail here, before any output is written
    docs.push_back({path, size, split_point(path, size, options.val_fraction), ""});
    total_bytes += size;
  }
  LMF_CHECK(total_bytes > 0, "the inputs hold no text (", docs.size(), " empty file(s))");

  std::unique_ptr<Tokenizer> tokenizer =
      options.tokenizer == "char"
          ? learn_char_tokenizer(docs, options.chunk_bytes, options.eot, options.special_tokens)
          : load_tokenizer(options.tokenizer);
  const int32_t eot_id = tokenizer->eot_id();
  LMF_CHECK(!options.eot || eot_id >= 0, "--eot needs a tokenizer with ", kEndOfText, "; '",
            options.tokenizer, "' has none");
  const int64_t vocab_size = tokenizer->vocab_size();
  const TokenWidth width = token_width_for_vocab(vocab_size);

  // Everything is written into a sibling temporary directory that replaces the output in one
  // rename, so a kill never leaves a new train.bin beside an old tokenizer.json.
  io::AtomicDir out_dir(options.out_dir);
  const fs::path out = out_dir.path();
  ShardWriter train((out / "train.bin").string(), width);
  ShardWriter val((out / "val.bin").string(), width);

  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  const int64_t batch_limit = options.chunk_bytes * threads * 2;
  std::vector<Piece> batch;
  int64_t batch_bytes = 0;
  int64_t done_bytes = 0;
  ProgressBar progress("prepare", total_bytes, "B", options.progress);

  auto flush = [&] {
    std::vector<std::string> errors(batch.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::size_t i = 0; i < batch.size(); ++i) {
      try {
        batch[i].ids = tokenizer->encode(batch[i].text);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Piece& piece = batch[i];
      LMF_CHECK(errors[i].empty(), "'", docs[piece.document].path, "' (in the part starting at ",
                "byte ", piece.offset, "): ", errors[i]);
      ShardWriter& writer = piece.val ? val : train;
      if (options.eot && piece.first_of_part) writer.write(&eot_id, 1);
      writer.write(piece.ids);
      done_bytes += static_cast<int64_t>(piece.text.size());
    }
    batch.clear();
    batch_bytes = 0;
    progress.update(done_bytes);
  };

  for (std::size_t d = 0; d < docs.size(); ++d) {
    Document& doc = docs[d];
    File file(doc.path, "rb");
    Sha256 sha;
    for (bool is_val : {false, true}) {
      int64_t begin = is_val ? doc.split : 0;
      int64_t end = is_val ? doc.size : doc.split;
      read_part(file, sha, begin, end, options.chunk_bytes,
                [&](std::string text, bool first, int64_t offset) {
                  batch_bytes += static_cast<int64_t>(text.size());
                  batch.push_back({is_val, first, d, offset, std::move(text), {}});
                  if (batch_bytes >= batch_limit) flush();
                });
    }
    doc.sha256 = sha.hex_digest();
  }
  flush();
  progress.finish();

  result.train_tokens = train.tokens_written();
  result.val_tokens = val.tokens_written();
  result.vocab_size = vocab_size;
  LMF_CHECK(result.train_tokens + result.val_tokens > 0, "the inputs produced no tokens");
  train.finish();
  val.finish();
  tokenizer->save((out / "tokenizer.json").string());

  nlohmann::json sources = nlohmann::json::array();
  for (const auto& doc : docs) {
    sources.push_back({{"path", doc.path}, {"bytes", doc.size}, {"sha256", doc.sha256}});
    result.files.push_back(doc.path);
  }
  nlohmann::json meta = {
      {"format", "lmforge-dataset"},
      {"version", 1},
      {"tokenizer",
       {{"file", "tokenizer.json"}, {"type", tokenizer->type()}, {"spec", options.tokenizer}}},
      {"vocab_size", vocab_size},
      {"token_dtype", width == TokenWidth::u16 ? "u16" : "u32"},
      {"eot", options.eot},
      {"eot_id", eot_id},
      {"val_fraction", options.val_fraction},
      {"train", {{"file", "train.bin"}, {"tokens", result.train_tokens}}},
      {"val", {{"file", "val.bin"}, {"tokens", result.val_tokens}}},
      {"source_bytes", total_bytes},
      {"sources", sources},
      {"skipped", result.skipped},
  };
  write_file_atomic((out / "meta.json").string(), meta.dump(2) + "\n");
  out_dir.commit();
  return result;
}

PretokenCounts count_pretokens(const std::vector<std::string>& inputs, int threads, bool progress,
                               int64_t chunk_bytes) {
  std::vector<std::string> paths = list_documents(inputs);
  LMF_CHECK(!paths.empty(), "no input files found in the given inputs");
  int64_t total_bytes = 0;
  for (const auto& path : paths) {
    std::error_code ec;
    total_bytes += static_cast<int64_t>(fs::file_size(path, ec));
    LMF_CHECK(!ec, "cannot read the size of '", path, "': ", ec.message());
  }
  LMF_CHECK(total_bytes > 0, "the inputs hold no text (", paths.size(), " empty file(s))");
  io::check_thread_count(threads, "threads");
  if (threads <= 0) threads = omp_get_max_threads();
  std::vector<PretokenCounts> per_thread(static_cast<std::size_t>(threads));
  std::vector<std::string> batch;
  int64_t batch_bytes = 0;
  int64_t done_bytes = 0;
  ProgressBar bar("count", total_bytes, "B", progress);
  auto flush = [&] {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::size_t i = 0; i < batch.size(); ++i) {
      per_thread[static_cast<std::size_t>(omp_get_thread_num())].add_text(batch[i]);
    }
    done_bytes += batch_bytes;
    batch.clear();
    batch_bytes = 0;
    bar.update(done_bytes);
  };
  for (const auto& path : paths) {
    File file(path, "rb");
    Sha256 unused;
    std::error_code ec;
    auto size = static_cast<int64_t>(fs::file_size(path, ec));
    read_part(file, unused, 0, size, chunk_bytes, [&](std::string text, bool, int64_t) {
      batch_bytes += static_cast<int64_t>(text.size());
      batch.push_back(std::move(text));
      if (batch_bytes >= chunk_bytes * threads * 2) flush();
    });
  }
  flush();
  bar.finish();
  for (std::size_t t = 1; t < per_thread.size(); ++t) per_thread[0].merge(per_thread[t]);
  return std::move(per_thread[0]);
}

}  // namespace lmf::data
