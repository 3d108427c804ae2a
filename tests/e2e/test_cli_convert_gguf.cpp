// `lmforge convert --to gguf` as a user runs it: a checkpoint directory in, one GGUF file out that
// @huggingface/gguf parses; bad options and refused inputs end with one error line and no file.
#include <catch2/catch.hpp>

#include <filesystem>

#include "e2e/cli_run.h"
#include "io/gguf_reader.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/lora.h"

using namespace lmf;
namespace fs = std::filesystem;
using lmf::test::lmforge;
using lmf::test::quote;
using lmf::test::require_clean_error;

namespace {

// A tiny GPT-2 checkpoint with lmforge's byte-level BPE (or a character tokenizer).
fs::path make_checkpoint(const fs::path& dir, bool char_tokenizer = false, bool lora = false) {
  data::PretokenCounts counts;
  counts.add_text("the cat sat on the mat, the hat sat there. ");
  data::BpeTrainOptions options;
  options.vocab_size = 280;
  auto bpe = data::train_bpe(counts, options);
  nn::GPTConfig c;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_embd = 32;
  c.block_size = 8;
  c.vocab_size = 288;
  nn::GPT gpt(c, 1);
  if (lora) {
    nn::LoraOptions l;
    l.rank = 2;
    l.targets = {"attn.c_attn"};
    nn::add_lora(gpt, l);
  }
  const fs::path ckpt = dir / "ckpt";
  io::save(gpt, ckpt);
  if (char_tokenizer) data::CharTokenizer::from_text("the cat").save((ckpt / "tokenizer.json").string());
  else bpe->save((ckpt / "tokenizer.json").string());
  return ckpt;
}

}  // namespace

TEST_CASE("convert --to gguf writes a file the GGUF parser reads; --force replaces it", "[e2e]") {
  const fs::path dir = lmf::test::work_dir("cli-gguf", "ok");
  const fs::path ckpt = make_checkpoint(dir, false, /*lora=*/true);
  const fs::path out = dir / "model.gguf";
  const std::string args = "convert --to gguf --checkpoint " + quote(ckpt.string()) + " --output " + quote(out.string());
  auto r = lmforge(dir, args + " --dtype q8_0");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("wrote") != std::string::npos);
  REQUIRE(fs::exists(out));
  if (!lmf::test::gguf_npm_dir().empty()) {
    const auto dump = lmf::test::gguf_dump(out);
    CHECK(dump["metadata"]["general.architecture"]["value"] == "gpt2");
    CHECK(dump["metadata"]["general.name"]["value"] == "model");
    CHECK(dump["metadata"]["general.file_type"]["value"] == 7);
    CHECK(dump["metadata"]["tokenizer.ggml.tokens"]["value"].size() == 288);
    CHECK(dump["tensors"].size() == 4 + 12);  // embeddings, final norm; 12 per layer
  }

  require_clean_error(lmforge(dir, args), {"already exists", "--force"});
  r = lmforge(dir, args + " --force --dtype bf16 --name 'my model'");
  CHECK(r.exit_code == 0);
  if (!lmf::test::gguf_npm_dir().empty()) {
    const auto dump = lmf::test::gguf_dump(out);
    CHECK(dump["metadata"]["general.file_type"]["value"] == 32);
    CHECK(dump["metadata"]["general.name"]["value"] == "my model");
  }
}

TEST_CASE("convert --to gguf: bad options and refused inputs give one error line and no file", "[e2e]") {
  const fs::path dir = lmf::test::work_dir("cli-gguf", "bad");
  const fs::path ckpt = make_checkpoint(dir);
  const fs::path out = dir / "m.gguf";
  const std::string base = "convert --to gguf --checkpoint " + quote(ckpt.string()) + " --output ";
  require_clean_error(lmforge(dir, base + quote(out.string()) + " --dtype q4_0"), {"q4_0", "f32, f16, bf16, q8_0"});
  require_clean_error(lmforge(dir, base + quote((ckpt / "m.gguf").string())), "inside the checkpoint");
  require_clean_error(lmforge(dir, "convert --to onnx --checkpoint " + quote(ckpt.string()) + " --output " +
                                       quote(out.string())),
                      "onnx");
  require_clean_error(lmforge(dir, "convert --to gguf --output " + quote(out.string())), "--checkpoint");
  CHECK_FALSE(fs::exists(out));

  const fs::path char_dir = lmf::test::work_dir("cli-gguf", "char");
  const fs::path char_ckpt = make_checkpoint(char_dir, /*char_tokenizer=*/true);
  require_clean_error(lmforge(char_dir, "convert --to gguf --checkpoint " + quote(char_ckpt.string()) + " --output " +
                                            quote((char_dir / "m.gguf").string())),
                      "character tokenizer");
  CHECK_FALSE(fs::exists(char_dir / "m.gguf"));
}
