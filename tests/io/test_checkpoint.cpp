// Tests for GPT checkpoints in Hugging Face GPT-2 form: exact round trips, the file's names and
// Conv1D layout, both key styles, tied/absent lm_head, ignored attention buffers, and errors that
// name the file and the tensor or key at fault.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "lmforge/autograd.h"
#include "lmforge/io/checkpoint.h"

namespace fs = std::filesystem;
using lmf::Tensor;
using lmf::nn::GPT;
using lmf::nn::GPTConfig;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("lmf_checkpoint_" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

GPTConfig small_config(bool bias = true) {
  GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.block_size = 16;
  c.vocab_size = 32;
  c.bias = bias;
  return c;
}

// A model whose every parameter (biases and LayerNorm gains included) is random, so a transposed
// or swapped tensor cannot go unnoticed.
std::unique_ptr<GPT> random_gpt(const GPTConfig& c, uint64_t seed = 1) {
  auto gpt = std::make_unique<GPT>(c, seed);
  lmf::Generator gen(seed + 100);
  lmf::NoGradGuard no_grad;
  for (auto& [name, p] : gpt->named_parameters()) {
    Tensor dst = p;
    dst.copy_(Tensor::randn(p.shape(), gen));
  }
  return gpt;
}

void check_same_parameters(const GPT& a, const GPT& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].first);
    CHECK(pa[i].first == pb[i].first);
    CHECK(pa[i].second.shape() == pb[i].second.shape());
    CHECK(pa[i].second.to_vector() == pb[i].second.to_vector());
  }
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p);
  out << text;
}

// Expects load_gpt(dir) to throw an lmf::Error containing every fragment.
void expect_load_error(const fs::path& dir, std::initializer_list<std::string> fragments) {
  try {
    lmf::io::load_gpt(dir);
    FAIL("no error loading " << dir);
  } catch (const lmf::Error& e) {
    std::string message = e.what();
    INFO(message);
    for (const auto& f : fragments) CHECK(message.find(f) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("save_gpt then load_gpt restores every parameter and the config exactly") {
  TempDir tmp;
  auto gpt = random_gpt(small_config());
  const fs::path dir = tmp.path / "ckpt";
  lmf::io::save_gpt(*gpt, dir);

  auto loaded = lmf::io::load_gpt(dir);
  check_same_parameters(*gpt, *loaded);
  CHECK(loaded->config().n_layer == 2);
  CHECK(loaded->config().n_embd == 8);
  CHECK(loaded->config().block_size == 16);
  CHECK(loaded->config().vocab_size == 32);

  Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 5, 9, 31, 0, 2}, {1, 6});
  lmf::NoGradGuard no_grad;
  gpt->eval();
  loaded->eval();
  CHECK(gpt->forward(ids).to_vector() == loaded->forward(ids).to_vector());

  // Nothing but the checkpoint is left in the parent directory.
  std::vector<fs::path> entries(fs::directory_iterator(tmp.path), fs::directory_iterator{});
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].filename() == "ckpt");
}

TEST_CASE("the saved directory is in Hugging Face GPT-2 form") {
  TempDir tmp;
  auto gpt = random_gpt(small_config());
  lmf::io::save_gpt(*gpt, tmp.path / "ckpt");

  auto config = read_json(tmp.path / "ckpt" / "config.json");
  CHECK(config["model_type"] == "gpt2");
  CHECK(config["architectures"][0] == "GPT2LMHeadModel");
  CHECK(config["n_positions"] == 16);
  CHECK(config["n_ctx"] == 16);
  CHECK(config["activation_function"] == "gelu_new");
  CHECK(config["layer_norm_epsilon"] == 1e-5);
  CHECK(config["tie_word_embeddings"] == true);
  CHECK_FALSE(config.contains("bias"));

  auto file = lmf::io::read_safetensors(tmp.path / "ckpt" / "model.safetensors");
  CHECK(file.metadata.at("format") == "pt");
  CHECK(file.tensors.count("lm_head.weight") == 0);
  CHECK(file.tensors.size() == 2 + 2 * 12 + 2);
  // Conv1D weights are stored (IN, OUT), the transpose of the model's (OUT, IN).
  const Tensor& c_attn = file.tensors.at("h.0.attn.c_attn.weight");
  CHECK(c_attn.shape() == lmf::Shape{8, 24});
  Tensor ours = gpt->parameter("h.0.attn.c_attn.weight");  // (24, 8)
  CHECK(c_attn.to_vector()[1 * 24 + 5] == ours.to_vector()[5 * 8 + 1]);
  CHECK(file.tensors.at("h.1.mlp.c_fc.weight").shape() == lmf::Shape{8, 32});
  CHECK(file.tensors.at("h.1.mlp.c_proj.weight").shape() == lmf::Shape{32, 8});
  CHECK(file.tensors.at("wte.weight").to_vector() == gpt->parameter("wte.weight").to_vector());
}

TEST_CASE("load_gpt accepts transformer.-prefixed names, a tied lm_head and attention buffers") {
  TempDir tmp;
  auto gpt = random_gpt(small_config());
  const fs::path dir = tmp.path / "ckpt";
  lmf::io::save_gpt(*gpt, dir);
  auto file = lmf::io::read_safetensors(dir / "model.safetensors");

  lmf::io::NamedTensors renamed;
  for (const auto& [name, t] : file.tensors) renamed.emplace_back("transformer." + name, t);
  renamed.emplace_back("lm_head.weight", file.tensors.at("wte.weight"));
  for (int i = 0; i < 2; ++i) {
    renamed.emplace_back("transformer.h." + std::to_string(i) + ".attn.bias",
                         Tensor::ones({1, 1, 16, 16}));
    renamed.emplace_back("transformer.h." + std::to_string(i) + ".attn.masked_bias",
                         Tensor::full({}, -1e4f));
  }
  lmf::io::write_safetensors(dir / "model.safetensors", renamed, {{"format", "pt"}});
  check_same_parameters(*gpt, *lmf::io::load_gpt(dir));

  SECTION("an untied lm_head is an error") {
    lmf::io::NamedTensors untied;
    for (auto& [name, t] : renamed)
      untied.emplace_back(name, name == "lm_head.weight" ? Tensor::zeros({32, 8}) : t);
    lmf::io::write_safetensors(dir / "model.safetensors", untied);
    expect_load_error(dir, {"model.safetensors", "lm_head.weight", "untied"});
  }
}

TEST_CASE("load_gpt rejects wrong shapes, missing and unknown tensors, naming them") {
  TempDir tmp;
  auto gpt = random_gpt(small_config());
  const fs::path dir = tmp.path / "ckpt";
  lmf::io::save_gpt(*gpt, dir);
  auto file = lmf::io::read_safetensors(dir / "model.safetensors");
  auto rewrite = [&](const std::string& drop, const std::string& add, Tensor value) {
    lmf::io::NamedTensors out;
    for (const auto& [name, t] : file.tensors)
      if (name != drop) out.emplace_back(name, t);
    if (!add.empty()) out.emplace_back(add, value);
    lmf::io::write_safetensors(dir / "model.safetensors", out);
  };

  SECTION("shape mismatch") {
    // The model's (OUT, IN) layout instead of Conv1D's (IN, OUT).
    rewrite("h.1.attn.c_attn.weight", "h.1.attn.c_attn.weight", Tensor::zeros({24, 8}));
    expect_load_error(dir, {"model.safetensors", "h.1.attn.c_attn.weight", "(24, 8)", "(8, 24)"});
  }
  SECTION("missing tensor") {
    rewrite("ln_f.bias", "", Tensor());
    expect_load_error(dir, {"model.safetensors", "missing tensor \"ln_f.bias\""});
  }
  SECTION("unknown tensor") {
    rewrite("", "h.7.attn.c_attn.weight", Tensor::zeros({8, 24}));
    expect_load_error(dir, {"model.safetensors", "unexpected tensor \"h.7.attn.c_attn.weight\""});
  }
  SECTION("the same tensor under both key styles") {
    rewrite("", "transformer.wte.weight", file.tensors.at("wte.weight"));
    expect_load_error(dir, {"model.safetensors", "wte.weight", "twice"});
  }
  SECTION("integer tensor") {
    rewrite("ln_f.bias", "ln_f.bias", Tensor::from_vector(std::vector<int32_t>(8, 0), {8}));
    expect_load_error(dir, {"model.safetensors", "ln_f.bias", "floating point"});
  }
  SECTION("config that disagrees with the tensors") {
    auto config = read_json(dir / "config.json");
    config["vocab_size"] = 33;
    write_text(dir / "config.json", config.dump());
    expect_load_error(dir, {"model.safetensors", "wte.weight", "(32, 8)", "(33, 8)"});
  }
  SECTION("config with far more layers than the file holds") {
    auto config = read_json(dir / "config.json");
    config["n_layer"] = 1000000000;
    write_text(dir / "config.json", config.dump());
    expect_load_error(dir, {"model.safetensors", "n_layer=1000000000"});
  }
  SECTION("truncated model file") {
    fs::resize_file(dir / "model.safetensors", fs::file_size(dir / "model.safetensors") - 4);
    expect_load_error(dir, {"model.safetensors", "truncated"});
  }
  SECTION("missing model file") {
    fs::remove(dir / "model.safetensors");
    expect_load_error(dir, {"model.safetensors"});
  }
}

TEST_CASE("read_gpt_config names the file and the key at fault") {
  TempDir tmp;
  const fs::path p = tmp.path / "config.json";
  const std::string good =
      R"({"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":8,"n_positions":16,"vocab_size":32})";
  write_text(p, good);
  GPTConfig c = lmf::io::read_gpt_config(p);
  CHECK(c.block_size == 16);
  CHECK(c.dropout == 0.f);
  CHECK(c.bias);

  auto expect = [&](const std::string& text, std::initializer_list<std::string> fragments) {
    write_text(p, text);
    try {
      lmf::io::read_gpt_config(p);
      FAIL("no error for " << text);
    } catch (const lmf::Error& e) {
      std::string message = e.what();
      INFO(message);
      CHECK(message.find(p.string()) != std::string::npos);
      for (const auto& f : fragments) CHECK(message.find(f) != std::string::npos);
    }
  };
  expect(R"({"n_layer":2,"n_head":2,"n_embd":8,"n_positions":16})", {"\"vocab_size\"", "missing"});
  expect(R"({"n_layer":"2","n_head":2,"n_embd":8,"n_positions":16,"vocab_size":32})",
         {"\"n_layer\"", "integer"});
  expect(R"({"n_layer":2,"n_head":2,"n_embd":8,"vocab_size":32})", {"\"n_ctx\"", "missing"});
  expect(R"({"n_layer":0,"n_head":2,"n_embd":8,"n_positions":16,"vocab_size":32})",
         {"\"n_layer\"", "positive"});
  expect(R"({"n_layer":2,"n_head":3,"n_embd":8,"n_positions":16,"vocab_size":32})", {"n_head"});
  expect(R"({"model_type":"llama","n_layer":2,"n_head":2,"n_embd":8,"n_positions":16,"vocab_size":32})",
         {"\"model_type\""});
  expect(R"({"n_layer":2,"n_head":2,"n_embd":8,"n_positions":16,"vocab_size":32,"activation_function":"relu"})",
         {"\"activation_function\""});
  expect(R"({"n_layer":2,"n_head":2,"n_embd":8,"n_positions":16,"vocab_size":32,"layer_norm_epsilon":1e-6})",
         {"\"layer_norm_epsilon\""});
  expect(R"({"n_layer":2,"n_head":2,"n_embd":8,"n_positions":16,"vocab_size":32,"n_inner":16})",
         {"\"n_inner\""});
  expect(R"({"n_layer":2,)", {"not valid JSON"});
  expect(R"({"n_layer":2,"n_head":2,"n_embd":8,"n_positions":16,"vocab_size":99999999999999})",
         {"\"vocab_size\"", "large"});
  fs::remove(p);
  CHECK_THROWS_WITH(lmf::io::read_gpt_config(p), Catch::Contains(p.string()));
}

TEST_CASE("a model without biases round trips through zero biases in the file") {
  TempDir tmp;
  auto gpt = random_gpt(small_config(/*bias=*/false));
  const fs::path dir = tmp.path / "ckpt";
  lmf::io::save_gpt(*gpt, dir);
  auto file = lmf::io::read_safetensors(dir / "model.safetensors");
  CHECK(file.tensors.at("h.0.attn.c_attn.bias").to_vector() == std::vector<float>(24, 0.f));
  CHECK(read_json(dir / "config.json")["bias"] == false);
  auto loaded = lmf::io::load_gpt(dir);
  CHECK_FALSE(loaded->config().bias);
  check_same_parameters(*gpt, *loaded);

  lmf::io::NamedTensors out;
  for (const auto& [name, t] : file.tensors)
    out.emplace_back(name, name == "ln_f.bias" ? Tensor::ones({8}) : t);
  lmf::io::write_safetensors(dir / "model.safetensors", out);
  expect_load_error(dir, {"ln_f.bias", "non-zero"});
}

TEST_CASE("AtomicDir replaces a previous directory and cleans up when not committed") {
  TempDir tmp;
  const fs::path target = tmp.path / "sub" / "ckpt";
  {
    lmf::io::AtomicDir dir(target);
    write_text(dir.path() / "a.txt", "first");
    CHECK_FALSE(fs::exists(target));
    dir.commit();
  }
  CHECK(fs::exists(target / "a.txt"));
  {
    lmf::io::AtomicDir dir(target);
    write_text(dir.path() / "b.txt", "second");
    dir.commit();
  }
  CHECK(fs::exists(target / "b.txt"));
  CHECK_FALSE(fs::exists(target / "a.txt"));
  fs::path abandoned;
  {
    lmf::io::AtomicDir dir(target);
    abandoned = dir.path();
    write_text(dir.path() / "c.txt", "never committed");
  }
  CHECK_FALSE(fs::exists(abandoned));
  CHECK(fs::exists(target / "b.txt"));
  std::vector<fs::path> entries(fs::directory_iterator(tmp.path / "sub"), fs::directory_iterator{});
  CHECK(entries.size() == 1);

  // Saving over an existing checkpoint replaces it whole.
  lmf::io::save_gpt(*random_gpt(small_config()), target);
  CHECK(fs::exists(target / "model.safetensors"));
  CHECK_FALSE(fs::exists(target / "b.txt"));
}

TEST_CASE("load_model picks the architecture from config.json's model_type and loads what save wrote") {
  TempDir tmp;
  auto gpt = random_gpt(small_config());
  const fs::path dir = tmp.path / "ckpt";
  lmf::io::save(*gpt, dir);  // through the CausalLM interface
  const std::unique_ptr<lmf::nn::CausalLM> model = lmf::io::load_model(dir);
  REQUIRE(model->arch() == "gpt2");
  REQUIRE(dynamic_cast<const lmf::nn::GPT*>(model.get()) != nullptr);
  check_same_parameters(*gpt, dynamic_cast<const lmf::nn::GPT&>(*model));
  CHECK(model->hf_config_json() == gpt->hf_config_json());

  // No model_type: a GPT-2 config of an older tool.
  nlohmann::json config = read_json(dir / "config.json");
  config.erase("model_type");
  write_text(dir / "config.json", config.dump());
  CHECK(lmf::io::load_model(dir)->arch() == "gpt2");

  config["model_type"] = "gemma";
  write_text(dir / "config.json", config.dump());
  CHECK_THROWS_WITH(lmf::io::load_model(dir), Catch::Contains("config.json") && Catch::Contains("\"model_type\"") &&
                                                  Catch::Contains("\"gemma\"") && Catch::Contains("\"gpt2\""));
  CHECK_THROWS_WITH(lmf::io::load_model(tmp.path / "absent"), Catch::Contains("not a checkpoint directory"));
}
