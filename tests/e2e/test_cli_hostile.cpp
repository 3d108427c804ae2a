// Hostile and careless inputs driven through the lmforge binary: every one must be one clean error
// line (or correct behaviour), never a crash, a hang, a command run on the user's behalf, a file
// written through a planted symlink, or a user file deleted.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "e2e/cli_run.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/llama.h"

namespace fs = std::filesystem;
using lmf::test::lmforge;
using lmf::test::quote;
using lmf::test::require_clean_error;
using lmf::test::RunResult;
using lmf::test::slurp;
using lmf::test::write_file;

namespace {

fs::path work_dir(const std::string& name) { return lmf::test::work_dir("cli-hostile", name); }

// A CLI parse error: status 2 and one "lmforge: error:" line.
void require_parse_error(const RunResult& r, const std::string& needle) {
  require_clean_error(r, needle);
  CHECK(r.exit_code == 2);
}

std::string corpus_text() {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the quick brown fox jumps over the lazy dog\n";
  return text;
}

// A minimal config whose first error is about data (used to prove earlier keys were accepted).
std::string config_with(const std::string& extra) { return extra + "data:\n  train: /nonexistent/x.bin\n"; }

fs::path save_tiny_model(const fs::path& dir, bool poison) {
  lmf::nn::GPTConfig c;
  c.n_layer = 1, c.n_head = 1, c.n_embd = 8, c.block_size = 8, c.vocab_size = 16;
  lmf::nn::GPT gpt(c, 1);
  if (poison) gpt.named_parameters().front().second.fill_(std::numeric_limits<float>::quiet_NaN());
  lmf::io::save_gpt(gpt, dir);
  return dir;
}

// `lmforge ARGS` run as a child of its own, so its peak resident memory is known (wait4).
struct Measured {
  RunResult result;
  long max_rss_kb = 0;
};

Measured lmforge_measured(const fs::path& dir, const std::string& args) {
  const fs::path err = dir / "stderr.txt";
  const std::string line = "exec " + quote(LMF_CLI) + " " + args + " </dev/null >/dev/null 2>" + quote(err.string());
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  Measured m;
  int status = 0;
  struct rusage usage {};
  REQUIRE(::wait4(pid, &status, 0, &usage) == pid);
  m.result.exit_code = lmf::test::exit_code(status);
  m.result.err = slurp(err);
  m.max_rss_kb = usage.ru_maxrss;
  return m;
}

// Rewrites DIR/model.safetensors with one more tensor in its header, `name` of `shape` (F32), whose
// bytes lie past the end of the data: the file is then extended sparsely to the size the header
// claims, so every offset is in range and only the claim is huge (nothing is written to disk).
void add_sparse_tensor(const fs::path& file, const std::string& name, const std::vector<int64_t>& shape) {
  std::string bytes = slurp(file);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  auto header = nlohmann::json::parse(bytes.substr(8, header_len));
  const std::string data = bytes.substr(8 + header_len);
  uint64_t numel = 1;
  for (int64_t d : shape) numel *= static_cast<uint64_t>(d);
  header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + 4 * numel}}};
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  write_file(file, out + text + data);
  REQUIRE(::truncate(file.c_str(), static_cast<off_t>(8 + text.size() + data.size() + 4 * numel)) == 0);
}

}  // namespace

TEST_CASE("plot: quotes and newlines in paths never reach gnuplot as commands") {
  const fs::path dir = work_dir("plot-inject");
  const std::string marker = "/tmp/lmf_plot_pwned_" + std::to_string(::getpid());
  fs::remove(marker);
  // A run directory whose name closes gnuplot's string, starts a new line and calls system().
  std::string octal_marker;
  for (char c : marker) octal_marker += c == '/' ? std::string("\\057") : std::string(1, c);
  const std::string evil = "run'\"\nsystem(\"touch " + octal_marker + "\")\n'";
  const fs::path run = dir / evil;
  fs::create_directories(run);
  write_file(run / "metrics.jsonl", "{\"step\":1,\"train_loss\":3.5}\n{\"step\":2,\"train_loss\":3.0,\"val_loss\":3.2}\n");
  const fs::path out = dir / ("o'ut\nsystem(\"touch " + octal_marker + "\")\n.png");
  // The shell command line quotes with single quotes; pass the paths through the environment.
  ::setenv("LMF_T_RUN", run.c_str(), 1);
  ::setenv("LMF_T_OUT", out.c_str(), 1);
  const RunResult r = lmf::test::run(quote(LMF_CLI) + " plot \"$LMF_T_RUN\" -o \"$LMF_T_OUT\" </dev/null", dir);
  INFO(r.err);
  CHECK(!fs::exists(marker));
  if (r.exit_code == 0) {  // gnuplot present: the image is at the exact path asked for
    CHECK(fs::is_regular_file(out));
    CHECK(fs::file_size(out) > 100);
  }
  // A deeply nested metrics line is an error line, not a stack overflow.
  write_file(run / "metrics.jsonl", std::string(200000, '[') + "\n");
  require_clean_error(lmf::test::run(quote(LMF_CLI) + " plot \"$LMF_T_RUN\" </dev/null", dir), "not a JSON object");
  // A torn last line (a run killed mid-write) is skipped with a warning.
  write_file(run / "metrics.jsonl", "{\"step\":1,\"train_loss\":3.5}\n{\"step\":2,\"trai");
  const RunResult torn = lmf::test::run(quote(LMF_CLI) + " plot \"$LMF_T_RUN\" -o \"$LMF_T_OUT\" </dev/null", dir);
  CHECK(torn.err.find("torn last line") != std::string::npos);
}

TEST_CASE("outputs: a symlink planted at a temporary or final name is never followed") {
  const fs::path dir = work_dir("symlink");
  write_file(dir / "corpus.txt", corpus_text());
  write_file(dir / "victim", "precious");
  const fs::path tok = dir / "tok.json";
  fs::create_symlink(dir / "victim", dir / "tok.json.tmp");
  fs::create_symlink(dir / "victim", tok);
  const RunResult r = lmforge(dir, "tokenizer train --input " + quote((dir / "corpus.txt").string()) +
                                       " --vocab-size 270 --output " + quote(tok.string()));
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(slurp(dir / "victim") == "precious");
  CHECK(fs::is_regular_file(fs::symlink_status(tok)));  // the link itself was replaced
  // prepare: links planted at the old temporary names inside the output directory make it a
  // directory lmforge did not write, so it is refused and nothing is written through them.
  const fs::path out = dir / "data";
  fs::create_directories(out);
  for (const char* name : {"train.bin.tmp", "val.bin.tmp", "meta.json.tmp"})
    fs::create_symlink(dir / "victim", out / name);
  require_clean_error(lmforge(dir, "prepare --input " + quote((dir / "corpus.txt").string()) + " --out " +
                                       quote(out.string()) + " --tokenizer char"), "--out");
  CHECK(slurp(dir / "victim") == "precious");
  // A shard or tokenizer written where a symlink sits at the final name replaces the link.
  fs::remove_all(out);
  fs::create_directories(out);
  const RunResult p = lmforge(dir, "prepare --input " + quote((dir / "corpus.txt").string()) + " --out " +
                                       quote((dir / "data2").string()) + " --tokenizer char");
  INFO(p.err);
  CHECK(p.exit_code == 0);
  CHECK(slurp(dir / "victim") == "precious");
  // A failed tokenizer train (output is a directory) leaves no temporary behind.
  fs::create_directories(dir / "outdir");
  require_clean_error(lmforge(dir, "tokenizer train --input " + quote((dir / "corpus.txt").string()) +
                                       " --vocab-size 270 --output " + quote((dir / "outdir").string())),
                      "outdir");
  for (const auto& e : fs::directory_iterator(dir))
    CHECK(e.path().filename().string().find("outdir.tmp") == std::string::npos);
}

TEST_CASE("data loss: outputs that are or contain inputs are refused, foreign directories never removed") {
  const fs::path dir = work_dir("data-loss");
  const fs::path corpus = dir / "in";
  fs::create_directories(corpus);
  write_file(corpus / "a.txt", corpus_text());
  // prepare --out equal to, or inside, its input directory.
  require_clean_error(lmforge(dir, "prepare --input " + quote(corpus.string()) + " --out " + quote(corpus.string()) +
                                       " --tokenizer char"), "--out");
  require_clean_error(lmforge(dir, "prepare --input " + quote(corpus.string()) + " --out " +
                                       quote((corpus / "sub").string()) + " --tokenizer char"), "--out");
  CHECK(slurp(corpus / "a.txt") == corpus_text());
  // prepare --out over a directory with a user's file: refused, the file kept.
  fs::create_directories(dir / "mine");
  write_file(dir / "mine" / "notes.txt", "keep me");
  require_clean_error(lmforge(dir, "prepare --input " + quote(corpus.string()) + " --out " +
                                       quote((dir / "mine").string()) + " --tokenizer char"), "notes.txt");
  CHECK(slurp(dir / "mine" / "notes.txt") == "keep me");
  // prepare over its own earlier output: replaced as a whole.
  const fs::path data = dir / "data";
  for (int i = 0; i < 2; ++i) {
    const RunResult r = lmforge(dir, "prepare --input " + quote(corpus.string()) + " --out " + quote(data.string()) +
                                         " --tokenizer char");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
  // tokenizer train --output equal to an input file.
  require_clean_error(lmforge(dir, "tokenizer train --input " + quote((corpus / "a.txt").string()) +
                                       " --vocab-size 270 --output " + quote((corpus / "a.txt").string())),
                      "--output");
  CHECK(slurp(corpus / "a.txt") == corpus_text());

  // convert --merge-lora --force: an output that contains the checkpoint, or a foreign directory.
  const fs::path ckpt = save_tiny_model(dir / "runs" / "ckpt", false);
  require_clean_error(lmforge(dir, "convert --merge-lora " + quote(ckpt.string()) + " --output " +
                                       quote((dir / "runs").string()) + " --force"), "--output");
  require_clean_error(lmforge(dir, "convert --merge-lora " + quote(ckpt.string()) + " --output " +
                                       quote(ckpt.string()) + " --force"), "--output");
  CHECK(fs::exists(ckpt / lmf::io::kModelFile));
}

TEST_CASE("resources: absurd thread counts, FIFOs, /dev/zero and deep JSON are clean errors") {
  const fs::path dir = work_dir("resources");
  write_file(dir / "corpus.txt", corpus_text());
  require_parse_error(lmforge(dir, "prepare --input " + quote((dir / "corpus.txt").string()) + " --out " +
                                       quote((dir / "d").string()) + " --threads 100000"), "--threads");
  write_file(dir / "t.yaml", config_with("run:\n  threads: 100000\n"));
  require_clean_error(lmforge(dir, "train " + quote((dir / "t.yaml").string())), "run.threads");
  // Special files: refused at once rather than read forever.
  require_clean_error(lmforge(dir, "train /dev/zero"), "regular file");
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  require_clean_error(lmforge(dir, "train " + quote((dir / "fifo").string())), "FIFO");
  require_clean_error(lmforge(dir, "tokenize --tokenizer " + quote((dir / "fifo").string())), "FIFO");
  write_file(dir / "f.yaml", "data:\n  train: " + (dir / "fifo").string() +
                                 "\nmodel:\n  vocab_size: 16\n  n_layer: 1\n  n_embd: 8\n  n_head: 1\n  block_size: 8\n"
                                 "training:\n  max_steps: 1\n");
  const RunResult fifo_data = lmf::test::run("timeout 60 " + quote(LMF_CLI) + " train " + quote((dir / "f.yaml").string()) + " </dev/null", dir);
  require_clean_error(fifo_data, "FIFO");
  // Oversized config.
  write_file(dir / "big.yaml", "# " + std::string(2 << 20, 'x') + "\n");
  require_clean_error(lmforge(dir, "train " + quote((dir / "big.yaml").string())), "limit");
  // Deeply nested JSON in a config.json and a safetensors __metadata__.
  const fs::path ckpt = save_tiny_model(dir / "ckpt", false);
  const std::string good_config = slurp(ckpt / "config.json");
  write_file(ckpt / "config.json", std::string(100000, '[') + std::string(100000, ']'));
  require_clean_error(lmforge(dir, "eval --checkpoint " + quote(ckpt.string()) + " --data x.bin"), "nested");
  write_file(ckpt / "config.json", good_config);
  std::string header = "{\"__metadata__\":{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}}";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_file(ckpt / "model.safetensors", bytes + header);
  require_clean_error(lmforge(dir, "eval --checkpoint " + quote(ckpt.string()) + " --data x.bin"), "nested");
  // A huge shape is named briefly: the error line stays short.
  header = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1";
  for (int i = 0; i < 100000; ++i) header += ",2";
  header += "],\"data_offsets\":[0,4]}}";
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_file(ckpt / "model.safetensors", bytes + header + std::string(4, '\0'));
  const RunResult big = lmforge(dir, "eval --checkpoint " + quote(ckpt.string()) + " --data x.bin");
  require_clean_error(big, "model.safetensors");
  CHECK(big.err.size() < 2000);
}

TEST_CASE("command line: numbers are range-checked and parse errors are one line with status 2") {
  const fs::path dir = work_dir("numbers");
  const std::string gen = "generate --checkpoint " + quote(dir.string()) + " ";
  require_parse_error(lmforge(dir, gen + "--max-new-tokens 18446744073709551616"), "--max-new-tokens");
  require_parse_error(lmforge(dir, gen + "--max-new-tokens 99999999999"), "--max-new-tokens");
  require_parse_error(lmforge(dir, gen + "--seed -1"), "--seed");
  require_parse_error(lmforge(dir, gen + "--seed 18446744073709551616"), "--seed");
  require_parse_error(lmforge(dir, gen + "--seed 010"), "--seed");
  require_parse_error(lmforge(dir, gen + "--top-p nan"), "--top-p");
  require_parse_error(lmforge(dir, "eval --checkpoint x --data y --batch-size 0"), "--batch-size");
  require_parse_error(lmforge(dir, "frobnicate"), "unknown command 'frobnicate'");
  require_parse_error(lmforge(dir, "train"), "config");
  require_parse_error(lmforge(dir, "prepare --input a --out b --bogus"), "--bogus");
  CHECK(lmforge(dir, "--help").exit_code == 0);
}

TEST_CASE("config: duplicates, extra documents, octal-looking integers, aliases, bad UTF-8 are refused") {
  const fs::path dir = work_dir("yaml");
  auto check = [&](const std::string& yaml, const std::string& needle) {
    write_file(dir / "c.yaml", yaml);
    require_clean_error(lmforge(dir, "train " + quote((dir / "c.yaml").string())), needle);
  };
  check(config_with("training:\n  lr: 0.1\n  lr: 0.2\n"), "appears twice");
  check(config_with("training:\n  lr: 0.1\ntraining:\n  max_steps: 3\n"), "appears twice");
  check(config_with("training:\n  lr: 0.1\n") + "---\ntraining:\n  lr: 0.2\n", "more than one YAML document");
  check(config_with("training:\n  max_steps: 010\n"), "training.max_steps");
  check(config_with("a: &x [1, 2]\ntraining:\n  betas: *x\n"), "anchors");
  write_file(dir / "u.yaml", config_with("run:\n  name: bad\xff\xfe\n"));
  require_clean_error(lmforge(dir, "train " + quote((dir / "u.yaml").string())), "UTF-8");
  check(config_with("training:\n  max_tokens: 9223372036854775807\n"), "training.max_tokens");
  check(config_with("training:\n  warmup_steps: 9223372036854775000\n"), "training.warmup_steps");
  // progress: false is accepted as none (the first error is about data.train, not the key).
  check(config_with("logging:\n  progress: false\ntraining:\n  max_steps: 1\n"), "data.train");
}

TEST_CASE("tokenizers and models: duplicate symbols, NUL bytes and NaN weights") {
  const fs::path dir = work_dir("tokenizers");
  write_file(dir / "dup.json", R"({"format":"lmforge-tokenizer","version":1,"type":"char","vocab":["a","a","b"],"special_tokens":{}})");
  require_clean_error(lmforge(dir, "tokenize --tokenizer " + quote((dir / "dup.json").string())), "repeats");
  write_file(dir / "spec.json", R"({"format":"lmforge-tokenizer","version":1,"type":"char","vocab":["a","b"],"special_tokens":{"a":2}})");
  require_clean_error(lmforge(dir, "tokenize --tokenizer " + quote((dir / "spec.json").string())), "vocabulary symbol");
  // Decoding keeps text after a NUL: ids of "a\0b" round-trip.
  write_file(dir / "nul.json", "{\"format\":\"lmforge-tokenizer\",\"version\":1,\"type\":\"char\",\"vocab\":[\"\\u0000\",\"a\",\"b\"],\"special_tokens\":{}}");
  write_file(dir / "ids.txt", "1 0 2\n");
  const RunResult d = lmf::test::run(quote(LMF_CLI) + " tokenize --decode --tokenizer " + quote((dir / "nul.json").string()) +
                                     " < " + quote((dir / "ids.txt").string()), dir);
  INFO(d.err);
  CHECK(d.exit_code == 0);
  CHECK(d.out == std::string("a\0b", 3));
  write_file(dir / "bad_ids.txt", std::string("1\0" "5 2", 5));
  require_clean_error(lmf::test::run(quote(LMF_CLI) + " tokenize --decode --tokenizer " + quote((dir / "nul.json").string()) +
                                     " < " + quote((dir / "bad_ids.txt").string()), dir), "not a token id");
  // NaN weights: generate refuses instead of printing garbage.
  const fs::path ckpt = save_tiny_model(dir / "nan", true);
  write_file(dir / "tok16.json", R"({"format":"lmforge-tokenizer","version":1,"type":"char","vocab":["a","b","c"],"special_tokens":{}})");
  require_clean_error(lmforge(dir, "generate --checkpoint " + quote(ckpt.string()) + " --tokenizer " +
                                       quote((dir / "tok16.json").string()) + " --prompt ab --max-new-tokens 3"),
                      "NaN");
}

TEST_CASE("resources: a small sparse safetensors file that declares a 4 GiB tensor is refused before it is read") {
  const fs::path dir = work_dir("sparse");
  const std::vector<int64_t> huge = {int64_t{1} << 30};  // 4 GiB of F32
  // Each case: one error line naming the tensor, and the process never grows near the claim.
  auto refused = [&](const fs::path& ckpt, const std::string& needle) {
    const Measured m = lmforge_measured(dir, "eval --checkpoint " + quote(ckpt.string()) + " --data x.bin");
    require_clean_error(m.result, {needle, "model.safetensors"});
    INFO("peak RSS " << m.max_rss_kb << " KiB");
    CHECK(m.max_rss_kb < 512 * 1024);
  };
  // GPT-2: an extra tensor, and a "causal mask" buffer the loader skips but would still read.
  fs::path gpt = save_tiny_model(dir / "gpt", false);
  add_sparse_tensor(gpt / "model.safetensors", "extra.weight", huge);
  REQUIRE(fs::file_size(gpt / "model.safetensors") > (uint64_t{4} << 30));
  refused(gpt, "unexpected tensor \"extra.weight\"");
  gpt = save_tiny_model(dir / "gpt-mask", false);
  add_sparse_tensor(gpt / "model.safetensors", "h.0.attn.bias", {1, 1, 32768, 32768});
  refused(gpt, "h.0.attn.bias");
  // A Llama-family directory.
  lmf::nn::LlamaConfig c;
  c.vocab_size = 16, c.hidden_size = 8, c.intermediate_size = 16, c.num_hidden_layers = 1;
  c.num_attention_heads = 2, c.num_key_value_heads = 1, c.max_position_embeddings = 8;
  lmf::nn::Llama llama(c, 1);
  const fs::path llama_dir = dir / "llama";
  fs::create_directories(llama_dir);
  lmf::io::write_model_files(llama, llama_dir);
  add_sparse_tensor(llama_dir / "model.safetensors", "model.layers.0.mlp.extra.weight", huge);
  refused(llama_dir, "unexpected tensor \"model.layers.0.mlp.extra.weight\"");
  // A tensor the model has, with a huge shape instead of its own.
  fs::remove_all(llama_dir);
  fs::create_directories(llama_dir);
  lmf::io::write_model_files(llama, llama_dir);
  add_sparse_tensor(llama_dir / "model.safetensors", "lm_head.weight", {int64_t{1} << 26, 16});
  refused(llama_dir, "lm_head.weight");
}
