// GGUF export (see lmforge/io/gguf.h): the model's hyperparameters as llama.cpp's architecture keys,
// its parameters under llama.cpp's tensor names (Llama's q/k rows reordered for llama.cpp's rotary
// layout), and the tokenizer as tokenizer.ggml.* keys. Every rule mirrors what llama.cpp's
// convert_hf_to_gguf.py writes for the same Hugging Face directory; docs/formats.md lists them.
#include "lmforge/io/gguf.h"

#include <cctype>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "io/gguf_writer.h"
#include "io/safe_file.h"
#include "io/untrusted_json.h"
#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/llama.h"
#include "lmforge/nn/lora.h"

namespace lmf::io {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using gguf::TensorType;

// llama.cpp's token types (llama_token_type).
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// llama.cpp's file types (llama_ftype) for the element types written here.
uint32_t file_type(GgufDType dtype) {
  switch (dtype) {
    case GgufDType::f32: return 0;
    case GgufDType::f16: return 1;
    case GgufDType::q8_0: return 7;
    case GgufDType::bf16: return 32;
  }
  return 0;
}

TensorType weight_type(GgufDType dtype) {
  switch (dtype) {
    case GgufDType::f32: return TensorType::f32;
    case GgufDType::f16: return TensorType::f16;
    case GgufDType::bf16: return TensorType::bf16;
    case GgufDType::q8_0: return TensorType::q8_0;
  }
  return TensorType::f32;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The converter's choice per tensor: 1-D tensors, norms, biases and the position table stay f32
// (llama.cpp's kernels expect them so); q8_0 rows that do not split into blocks of 32 become f16.
TensorType tensor_type(const std::string& name, const std::vector<int64_t>& shape, GgufDType dtype) {
  if (shape.size() <= 1 || ends_with(name, "_norm.weight") || !ends_with(name, ".weight") ||
      name == "position_embd.weight")
    return TensorType::f32;
  if (dtype == GgufDType::q8_0 && shape.back() % gguf::kQ8Block != 0) return TensorType::f16;
  return weight_type(dtype);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

struct Vocab {
  std::string model;  // tokenizer.ggml.model
  std::string pre;    // tokenizer.ggml.pre
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;  // byte-level BPE only
  std::vector<float> scores;        // SentencePiece-style only
  int32_t bos = -1, eos = -1, pad = -1, unk = -1;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
  std::string chat_template;
};

// llama.cpp's converter marks these added tokens as control tokens even when the file does not.
bool looks_special(const std::string& t) {
  auto wrapped = [&](const std::string& open, const std::string& close) {
    return t.size() >= open.size() + close.size() && t.compare(0, open.size(), open) == 0 && ends_with(t, close);
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || wrapped("<unused", ">");
}

// Ids past the tokenizer's are padding rows of the model's embedding: named and typed as the
// converter does, so the token list is exactly as long as the embedding.
void pad_tokens(Vocab& v, int64_t model_vocab, const std::string& tokenizer) {
  LMF_CHECK(static_cast<int64_t>(v.tokens.size()) <= model_vocab, "tokenizer '", clip(tokenizer), "' has ",
            v.tokens.size(), " tokens but the model's vocabulary only ", model_vocab);
  for (std::size_t i = 0; i < v.tokens.size(); ++i) {
    if (v.types[i] != 0) continue;
    v.tokens[i] = str("[PAD", i, "]");
    v.types[i] = kUnused;
  }
  for (int64_t i = static_cast<int64_t>(v.tokens.size()); i < model_vocab; ++i) {
    v.tokens.push_back(str("[PAD", i, "]"));
    v.types.push_back(kUnused);
  }
  if (!v.scores.empty()) v.scores.resize(v.tokens.size(), 0.f);
}

Vocab byte_bpe_vocab(const data::ByteLevelBPE& bpe) {
  const std::vector<uint32_t> table = data::gpt2_byte_to_code_point();
  auto spell = [&](const std::string& bytes) {
    std::string s;
    for (unsigned char b : bytes) data::append_utf8(s, table[b]);
    return s;
  };
  Vocab v;
  v.model = "gpt2";
  v.pre = "gpt-2";  // lmforge's byte-level BPE cuts text with GPT-2's pattern
  const std::size_t n = static_cast<std::size_t>(bpe.vocab_size());
  v.tokens.resize(n);
  v.types.assign(n, 0);
  for (std::size_t id = 0; id < bpe.token_bytes().size(); ++id) {
    v.tokens[id] = spell(bpe.token_bytes()[id]);
    v.types[id] = kNormal;
  }
  for (const auto& [name, id] : bpe.special_tokens()) {
    v.tokens.at(static_cast<std::size_t>(id)) = name;
    v.types.at(static_cast<std::size_t>(id)) = kControl;
  }
  for (const auto& [a, b] : bpe.merges())
    v.merges.push_back(v.tokens.at(static_cast<std::size_t>(a)) + " " + v.tokens.at(static_cast<std::size_t>(b)));
  v.bos = v.eos = bpe.eot_id();
  v.add_bos = false;
  return v;
}

// The pre-tokenizer regexes of the tokenizer.json files llama.cpp names, compared exactly (llama.cpp
// itself names them by hashing the ids of a probe text; an equal regex gives equal ids).
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

std::string pre_tokenizer_name(const json& doc, const std::string& file) {
  const json pre = doc.value("pre_tokenizer", json());
  std::string described = pre.is_null() ? "null" : json_brief(pre);
  if (pre.is_object() && pre.value("type", "") == "ByteLevel" && pre.value("use_regex", true)) return "gpt-2";
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array() && pre["pretokenizers"].size() == 2) {
    const json& split = pre["pretokenizers"][0];
    const json& level = pre["pretokenizers"][1];
    // SmolLM's (and StarCoder's): every digit alone, then GPT-2's regex. llama.cpp's "smollm" runs
    // exactly these two splits.
    if (split.is_object() && split.value("type", "") == "Digits" && split.value("individual_digits", false) &&
        level.is_object() && level.value("type", "") == "ByteLevel" && level.value("use_regex", true))
      return "smollm";
    const bool byte_level = level.is_object() && level.value("type", "") == "ByteLevel" && !level.value("use_regex", true);
    if (byte_level && split.is_object() && split.value("type", "") == "Split" && split.contains("pattern") &&
        split["pattern"].is_object() && split["pattern"].contains("Regex") && split["pattern"]["Regex"].is_string()) {
      const std::string regex = split["pattern"]["Regex"].get<std::string>();
      if (regex == kLlama3Regex) return "llama-bpe";
      if (regex == kQwen2Regex) return "qwen2";
    }
  }
  throw Error(str(file, ": key \"pre_tokenizer\" (", clip(described),
                  ") is none of the pre-tokenizers lmforge can name for llama.cpp (GPT-2's, Llama 3's, Qwen2's, SmolLM's)"));
}

// A special token of tokenizer_config.json (a string or {"content": ...}) -> its id, or -1.
int32_t config_token_id(const json& config, const char* key, const std::map<std::string, int32_t>& ids) {
  if (!config.contains(key)) return -1;
  const json& v = config[key];
  std::string text;
  if (v.is_string()) text = v.get<std::string>();
  else if (v.is_object() && v.contains("content") && v["content"].is_string()) text = v["content"].get<std::string>();
  else return -1;
  auto it = ids.find(text);
  return it == ids.end() ? -1 : it->second;
}

std::string chat_template_of(const json& config, const fs::path& dir, const std::string& config_file) {
  if (config.contains("chat_template")) {
    const json& t = config["chat_template"];
    if (t.is_string()) return t.get<std::string>();
    if (t.is_array()) {
      for (const json& entry : t)
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
            entry["template"].is_string())
          return entry["template"].get<std::string>();
    }
    LMF_CHECK(t.is_null(), config_file, ": key \"chat_template\" is neither a string nor a list with a \"default\" entry");
  }
  const fs::path jinja = dir / "chat_template.jinja";
  if (fs::exists(jinja)) return read_regular_file(jinja, 16u << 20);
  return "";
}

bool is_byte_token(const std::string& t) {
  auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

// SentencePiece-style vocabularies go to llama.cpp's "llama" tokenizer, which merges the adjacent
// pair of highest score. A piece's score is minus the rank of the merge that makes it, so that
// greedy order is the BPE's merge order; pieces no merge makes score 0.
void add_sentencepiece_scores(Vocab& v, const json& doc) {
  std::map<std::string, int32_t> ids;
  for (std::size_t i = 0; i < v.tokens.size(); ++i) ids.emplace(v.tokens[i], static_cast<int32_t>(i));
  v.scores.assign(v.tokens.size(), 0.f);
  std::vector<bool> scored(v.tokens.size(), false);
  const json& merges = doc["model"]["merges"];
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    std::string merged;
    if (m.is_string()) {
      const std::string pair = m.get<std::string>();
      merged = pair.substr(0, pair.find(' ')) + pair.substr(pair.find(' ') + 1);
    } else {
      merged = m[0].get<std::string>() + m[1].get<std::string>();
    }
    auto it = ids.find(merged);
    if (it == ids.end() || scored[static_cast<std::size_t>(it->second)]) continue;
    scored[static_cast<std::size_t>(it->second)] = true;
    v.scores[static_cast<std::size_t>(it->second)] = -static_cast<float>(rank);
  }
}

Vocab hf_vocab(const data::HFTokenizer& tok, const fs::path& file) {
  const std::string where = file.string();
  // The loader has validated the file; read it again for the spellings and merges it keeps private.
  const json doc = parse_untrusted_json(read_regular_file(file), where);
  const bool byte_level = tok.byte_level();
  Vocab v;
  v.model = byte_level ? "gpt2" : "llama";
  v.pre = byte_level ? pre_tokenizer_name(doc, where) : "default";
  const std::size_t n = static_cast<std::size_t>(tok.vocab_size());
  v.tokens.resize(n);
  v.types.assign(n, 0);
  std::map<std::string, int32_t> ids;
  const std::string unk = doc["model"].value("unk_token", json()).is_string() ? doc["model"]["unk_token"].get<std::string>() : "";
  for (const auto& [text, id] : doc["model"]["vocab"].items()) {
    const auto i = id.get<std::size_t>();
    v.tokens.at(i) = text;
    v.types.at(i) = byte_level ? kNormal : text == unk ? kUnknown : is_byte_token(text) ? kByte : kNormal;
    ids[text] = static_cast<int32_t>(i);
  }
  for (const json& added : doc.value("added_tokens", json::array())) {
    const auto i = added["id"].get<std::size_t>();
    std::string text = added["content"].get<std::string>();
    const bool special = added.value("special", false) || looks_special(text);
    ids[text] = static_cast<int32_t>(i);
    if (!byte_level && text == unk) continue;  // stays the unknown token
    if (!special) {
      // User-defined tokens are matched in raw text by llama.cpp: '▁' there means a space.
      std::string spaced;
      for (std::size_t p = 0; p < text.size();) {
        const bool mark = text.compare(p, 3, "\xE2\x96\x81") == 0;
        spaced += mark ? ' ' : text[p];
        p += mark ? 3 : 1;
      }
      text = std::move(spaced);
    }
    v.tokens.at(i) = text;
    v.types.at(i) = special ? kControl : kUserDefined;
  }
  if (byte_level) {
    for (const json& m : doc["model"]["merges"])
      v.merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
  } else {
    // llama.cpp's "llama" tokenizer falls back to <0xNN> pieces and looks up the newline's.
    LMF_CHECK(ids.count("<0x0A>"), where,
              ": a SentencePiece-style vocabulary without <0xNN> byte pieces; llama.cpp's \"llama\" tokenizer needs them");
    add_sentencepiece_scores(v, doc);
    auto it = ids.find(unk);
    if (it != ids.end()) v.unk = it->second;
    // Whether the tokenizer puts '▁' before the first word (Prepend / Metaspace), as llama.cpp asks.
    const std::vector<int32_t> probe = tok.encode("a");
    v.add_space_prefix = !probe.empty() && v.tokens.at(static_cast<std::size_t>(probe[0])).rfind("\xE2\x96\x81", 0) == 0;
  }
  v.bos = tok.bos_id();
  v.eos = tok.eos_id();
  const fs::path config_path = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    const json config = parse_untrusted_json(read_regular_file(config_path, 64u << 20), config_path.string());
    if (config.is_object()) {
      if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) v.add_bos = config["add_bos_token"].get<bool>();
      if (config.contains("add_eos_token") && config["add_eos_token"].is_boolean()) v.add_eos = config["add_eos_token"].get<bool>();
      v.pad = config_token_id(config, "pad_token", ids);
      v.chat_template = chat_template_of(config, file.parent_path(), config_path.string());
    }
  } else {
    v.chat_template = chat_template_of(json::object(), file.parent_path(), "");
  }
  return v;
}

Vocab read_vocab(const std::string& spec, int64_t model_vocab) {
  std::unique_ptr<data::Tokenizer> tok = data::load_tokenizer(spec);
  LMF_CHECK(tok->type() != "char", "tokenizer '", clip(spec),
            "' is a character tokenizer; llama.cpp has no character vocabulary, so GGUF export needs a BPE "
            "tokenizer (prepare with --tokenizer gpt2, a trained BPE or a Hugging Face tokenizer)");
  Vocab v;
  if (const auto* bpe = dynamic_cast<const data::ByteLevelBPE*>(tok.get())) {
    v = byte_bpe_vocab(*bpe);
  } else if (const auto* hf = dynamic_cast<const data::HFTokenizer*>(tok.get())) {
    const fs::path file = fs::is_directory(spec) ? fs::path(spec) / "tokenizer.json" : fs::path(spec);
    v = hf_vocab(*hf, file);
  } else {
    throw Error(str("tokenizer '", clip(spec), "' of type '", tok->type(), "' has no GGUF vocabulary mapping"));
  }
  pad_tokens(v, model_vocab, spec);
  return v;
}

void add_vocab(gguf::Writer& w, const Vocab& v) {
  w.add_string("tokenizer.ggml.model", v.model);
  w.add_string("tokenizer.ggml.pre", v.pre);
  w.add_strings("tokenizer.ggml.tokens", v.tokens);
  w.add_i32s("tokenizer.ggml.token_type", v.types);
  if (v.model == "gpt2") w.add_strings("tokenizer.ggml.merges", v.merges);
  if (!v.scores.empty()) w.add_f32s("tokenizer.ggml.scores", v.scores);
  if (v.bos >= 0) w.add_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v.bos));
  if (v.eos >= 0) w.add_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v.eos));
  if (v.pad >= 0) w.add_u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(v.pad));
  if (v.unk >= 0) w.add_u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(v.unk));
  if (v.add_space_prefix) w.add_bool("tokenizer.ggml.add_space_prefix", *v.add_space_prefix);
  if (v.add_bos) w.add_bool("tokenizer.ggml.add_bos_token", *v.add_bos);
  if (v.add_eos) w.add_bool("tokenizer.ggml.add_eos_token", *v.add_eos);
  if (!v.chat_template.empty()) w.add_string("tokenizer.chat_template", v.chat_template);
}

// ---------------------------------------------------------------------------------------------
// Models

using Params = std::map<std::string, Tensor>;

const Tensor& param(const Params& params, const std::string& name) {
  auto it = params.find(name);
  LMF_CHECK(it != params.end(), "gguf: the model has no parameter '", name, "'");
  return it->second;
}

std::vector<int64_t> dims_of(const Tensor& t) { return std::vector<int64_t>(t.shape().begin(), t.shape().end()); }

void add_param(gguf::Writer& w, const std::string& name, const Tensor& t, GgufDType dtype) {
  const std::vector<int64_t> shape = dims_of(t);
  w.add_tensor(name, shape, tensor_type(name, shape, dtype), [t] { return t.to_vector(); });
}

// HF's rotary pairs (j, j + HS/2) of each head -> llama.cpp's adjacent pairs (2j, 2j+1): row
// h·HS + 2j + p of the result is row h·HS + p·HS/2 + j of `t` (rows of `cols` values).
std::vector<float> interleave_rotary_rows(const std::vector<float>& t, int64_t heads, int64_t HS, int64_t cols) {
  std::vector<float> out(t.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < HS / 2; ++j)
      for (int64_t p = 0; p < 2; ++p) {
        const float* src = t.data() + ((h * HS + p * (HS / 2) + j) * cols);
        std::copy(src, src + cols, out.data() + (h * HS + 2 * j + p) * cols);
      }
  return out;
}

void add_gpt(gguf::Writer& w, const nn::GPT& gpt, const Params& params, GgufDType dtype) {
  const nn::GPTConfig& c = gpt.config();
  const std::string a = "gpt2.";
  w.add_u32(a + "context_length", static_cast<uint32_t>(c.block_size));
  w.add_u32(a + "embedding_length", static_cast<uint32_t>(c.n_embd));
  w.add_u32(a + "block_count", static_cast<uint32_t>(c.n_layer));
  w.add_u32(a + "feed_forward_length", static_cast<uint32_t>(4 * c.n_embd));
  w.add_u32(a + "attention.head_count", static_cast<uint32_t>(c.n_head));
  w.add_u32(a + "attention.head_count_kv", static_cast<uint32_t>(c.n_head));
  w.add_f32(a + "attention.layer_norm_epsilon", 1e-5f);
  w.add_u32(a + "vocab_size", static_cast<uint32_t>(c.vocab_size));

  add_param(w, "token_embd.weight", param(params, "wte.weight"), dtype);
  add_param(w, "position_embd.weight", param(params, "wpe.weight"), dtype);
  // llama.cpp's GPT-2 requires every bias; a model without them computes the same with zeros.
  auto add_with_bias = [&](const std::string& to, const std::string& from, int64_t n) {
    add_param(w, to + ".weight", param(params, from + ".weight"), dtype);
    auto it = params.find(from + ".bias");
    if (it != params.end()) add_param(w, to + ".bias", it->second, dtype);
    else w.add_tensor(to + ".bias", {n}, TensorType::f32, [n] { return std::vector<float>(static_cast<std::size_t>(n), 0.f); });
  };
  const int64_t C = c.n_embd;
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string h = "h." + std::to_string(i) + ".", b = "blk." + std::to_string(i) + ".";
    add_with_bias(b + "attn_norm", h + "ln_1", C);
    add_with_bias(b + "attn_qkv", h + "attn.c_attn", 3 * C);
    add_with_bias(b + "attn_output", h + "attn.c_proj", C);
    add_with_bias(b + "ffn_norm", h + "ln_2", C);
    add_with_bias(b + "ffn_up", h + "mlp.c_fc", 4 * C);
    add_with_bias(b + "ffn_down", h + "mlp.c_proj", C);
  }
  add_with_bias("output_norm", "ln_f", C);
  // The head is tied to token_embd; llama.cpp reuses it when output.weight is absent.
}

std::string llama_arch(const nn::LlamaConfig& c) {
  const std::string type = c.hf_model_type();
  if (type == "llama" || type == "mistral") return "llama";
  if (type == "qwen2" || type == "qwen3") return type;
  throw Error(str("model_type '", type, "' has no GGUF architecture"));
}

// llama.cpp's per-frequency divisors for Llama 3.1's rotary scaling (the rope_freqs tensor).
std::vector<float> llama3_rope_factors(const nn::LlamaConfig& c) {
  const nn::RopeScaling& s = c.rope_scaling;
  const int64_t HS = c.head_size();
  const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  std::vector<float> out;
  for (int64_t i = 0; i < HS; i += 2) {
    const float freq = static_cast<float>(1.0 / std::pow(c.rope_theta, static_cast<double>(i) / static_cast<double>(HS)));
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.f);
    } else if (wavelen > low_wavelen) {
      out.push_back(static_cast<float>(s.factor));
    } else {
      const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      out.push_back(static_cast<float>(1.0 / ((1 - smooth) / s.factor + smooth)));
    }
  }
  return out;
}

void add_llama(gguf::Writer& w, const nn::Llama& model, const Params& params, GgufDType dtype) {
  const nn::LlamaConfig& c = model.config();
  const std::string arch = llama_arch(c);
  const int64_t C = c.hidden_size, NH = c.num_attention_heads, NKV = c.kv_heads(), HS = c.head_size();
  if (arch == "qwen3")
    LMF_CHECK(!c.qkv_bias && !c.o_bias, "qwen3 model with attention biases: llama.cpp's qwen3 has none");
  if (arch == "qwen2") {
    LMF_CHECK(c.qkv_bias && !c.o_bias, "qwen2 model without q/k/v biases or with an o_proj bias");
    // llama.cpp's qwen2 sizes q/k/v by the embedding width (it reads no key_length).
    LMF_CHECK(HS * NH == C, "qwen2 model with head_dim ", HS, " != hidden_size / num_attention_heads (", C / NH,
              "): llama.cpp's qwen2 cannot load it");
  }
  const std::string a = arch + ".";
  w.add_u32(a + "context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.add_u32(a + "embedding_length", static_cast<uint32_t>(C));
  w.add_u32(a + "block_count", static_cast<uint32_t>(c.num_hidden_layers));
  w.add_u32(a + "feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  w.add_u32(a + "attention.head_count", static_cast<uint32_t>(NH));
  w.add_u32(a + "attention.head_count_kv", static_cast<uint32_t>(NKV));
  w.add_f32(a + "attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.add_f32(a + "rope.freq_base", static_cast<float>(c.rope_theta));
  w.add_u32(a + "rope.dimension_count", static_cast<uint32_t>(HS));
  if (HS * NH != C) {
    w.add_u32(a + "attention.key_length", static_cast<uint32_t>(HS));
    w.add_u32(a + "attention.value_length", static_cast<uint32_t>(HS));
  }
  w.add_u32(a + "vocab_size", static_cast<uint32_t>(c.vocab_size));
  if (c.rope_scaling.type == nn::RopeScalingType::linear) {
    w.add_string(a + "rope.scaling.type", "linear");
    w.add_f32(a + "rope.scaling.factor", static_cast<float>(c.rope_scaling.factor));
  } else if (c.rope_scaling.type == nn::RopeScalingType::llama3) {
    // llama.cpp applies Llama 3.1's scaling only through the llama architecture's rope_freqs.
    LMF_CHECK(arch == "llama", "rope_scaling \"llama3\" on a ", arch,
              " model: llama.cpp reads the rope_freqs tensor only for the llama architecture");
    const std::vector<float> factors = llama3_rope_factors(c);
    w.add_tensor("rope_freqs.weight", {static_cast<int64_t>(factors.size())}, TensorType::f32, [factors] { return factors; });
  }

  const bool permute = arch == "llama";  // llama.cpp's qwen2/qwen3 rotate halves as HF does
  auto add_qk = [&](const std::string& to, const std::string& from, int64_t heads) {
    const Tensor& t = param(params, from);
    const std::vector<int64_t> shape = dims_of(t);
    const int64_t cols = shape.size() == 2 ? shape[1] : 1;
    w.add_tensor(to, shape, tensor_type(to, shape, dtype), [t, heads, HS, cols, permute] {
      std::vector<float> v = t.to_vector();
      return permute ? interleave_rotary_rows(v, heads, HS, cols) : v;
    });
  };
  add_param(w, "token_embd.weight", param(params, "model.embed_tokens.weight"), dtype);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".", b = "blk." + std::to_string(i) + ".";
    add_param(w, b + "attn_norm.weight", param(params, p + "input_layernorm.weight"), dtype);
    for (const char* suffix : {"weight", "bias"}) {
      if (std::string(suffix) == "bias" && !c.qkv_bias) continue;
      add_qk(b + "attn_q." + suffix, p + "self_attn.q_proj." + suffix, NH);
      add_qk(b + "attn_k." + suffix, p + "self_attn.k_proj." + suffix, NKV);
      add_param(w, b + "attn_v." + suffix, param(params, p + "self_attn.v_proj." + suffix), dtype);
    }
    add_param(w, b + "attn_output.weight", param(params, p + "self_attn.o_proj.weight"), dtype);
    if (c.o_bias) add_param(w, b + "attn_output.bias", param(params, p + "self_attn.o_proj.bias"), dtype);
    if (c.qk_norm) {
      add_param(w, b + "attn_q_norm.weight", param(params, p + "self_attn.q_norm.weight"), dtype);
      add_param(w, b + "attn_k_norm.weight", param(params, p + "self_attn.k_norm.weight"), dtype);
    }
    add_param(w, b + "ffn_norm.weight", param(params, p + "post_attention_layernorm.weight"), dtype);
    add_param(w, b + "ffn_gate.weight", param(params, p + "mlp.gate_proj.weight"), dtype);
    add_param(w, b + "ffn_up.weight", param(params, p + "mlp.up_proj.weight"), dtype);
    add_param(w, b + "ffn_down.weight", param(params, p + "mlp.down_proj.weight"), dtype);
  }
  add_param(w, "output_norm.weight", param(params, "model.norm.weight"), dtype);
  // A tied head is token_embd itself, which llama.cpp reuses when output.weight is absent.
  if (!c.tie_word_embeddings) add_param(w, "output.weight", param(params, "lm_head.weight"), dtype);
}

}  // namespace

GgufDType parse_gguf_dtype(const std::string& name) {
  if (name == "f32") return GgufDType::f32;
  if (name == "f16") return GgufDType::f16;
  if (name == "bf16") return GgufDType::bf16;
  if (name == "q8_0") return GgufDType::q8_0;
  throw Error(str("--dtype: '", clip(name), "' is not a GGUF type lmforge writes (f32, f16, bf16, q8_0)"));
}

void write_gguf(const nn::CausalLM& model, const std::string& tokenizer, const fs::path& output,
                const GgufOptions& options) {
  const auto* gpt = dynamic_cast<const nn::GPT*>(&model);
  const auto* llama = dynamic_cast<const nn::Llama*>(&model);
  LMF_CHECK(gpt || llama, "model architecture '", model.arch(),
            "' has no GGUF mapping (supported: gpt2, llama, mistral, qwen2, qwen3)");
  LMF_CHECK(!nn::lora_options(model), "the model has LoRA adapters; merge them first (lmforge convert --merge-lora)");
  const std::string arch = gpt ? "gpt2" : llama_arch(llama->config());
  const Vocab vocab = read_vocab(tokenizer, model.vocab_size());

  gguf::Writer w;
  w.add_string("general.architecture", arch);
  w.add_string("general.type", "model");
  w.add_string("general.name", options.name.empty() ? output.stem().string() : options.name);
  w.add_u32("general.file_type", file_type(options.dtype));
  w.add_u32("general.quantization_version", 2);
  w.add_u32("general.alignment", gguf::kAlignment);
  Params params;
  for (auto& [name, t] : model.named_parameters()) params.emplace(name, t);
  if (gpt) add_gpt(w, *gpt, params, options.dtype);
  else add_llama(w, *llama, params, options.dtype);
  add_vocab(w, vocab);

  AtomicFile file(output);
  w.write(file);
  file.commit();
}

}  // namespace lmf::io
