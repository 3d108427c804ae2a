// CausalLM <-> Hugging Face directories. One small table of architectures (kArchitectures) maps
// config.json's model_type to a loader and a writer, so a new model family is one entry. For GPT-2
// one table (hf_tensor_shapes) lists every tensor the config implies with its file shape, so
// saving, loading and shape checking cannot drift apart; the only layout change at the boundary is
// the Conv1D transpose.
#include "lmforge/io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/hf_llama.h"
#include "io/safe_file.h"
#include "io/untrusted_json.h"
#include "lmforge/nn/lora.h"

namespace lmf::io {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct FileTensor {
  std::string name;  ///< without the "transformer." prefix
  Shape shape;       ///< as stored in the file
  bool conv1d = false;  ///< stored (IN, OUT); the model holds (OUT, IN)
  bool is_bias = false;
};

// Every tensor of a GPT-2 file for this config, in the model's registration order.
std::vector<FileTensor> hf_tensor_shapes(const nn::GPTConfig& c) {
  const int64_t C = c.n_embd;
  std::vector<FileTensor> out;
  out.push_back({"wte.weight", {c.vocab_size, C}});
  out.push_back({"wpe.weight", {c.block_size, C}});
  auto add_ln = [&](const std::string& p) {
    out.push_back({p + ".weight", {C}});
    out.push_back({p + ".bias", {C}, false, true});
  };
  auto add_conv = [&](const std::string& p, int64_t in, int64_t outf) {
    out.push_back({p + ".weight", {in, outf}, true});
    out.push_back({p + ".bias", {outf}, false, true});
  };
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string h = "h." + std::to_string(i);
    add_ln(h + ".ln_1");
    add_conv(h + ".attn.c_attn", C, 3 * C);
    add_conv(h + ".attn.c_proj", C, C);
    add_ln(h + ".ln_2");
    add_conv(h + ".mlp.c_fc", C, 4 * C);
    add_conv(h + ".mlp.c_proj", 4 * C, C);
  }
  add_ln("ln_f");
  return out;
}

// (R, K) -> (K, R) copy of a CPU f32 tensor of any strides.
Tensor transpose_2d(const Tensor& t) {
  Tensor src = t.to(Device::cpu()).to(DType::f32).contiguous_copy();
  const int64_t rows = src.size(0), cols = src.size(1);
  Tensor dst = Tensor::empty({cols, rows});
  const float* s = src.data<float>();
  float* d = dst.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) d[k * rows + r] = s[r * cols + k];
  return dst;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Buffers that Hugging Face checkpoints may carry and that the model recomputes (causal mask).
bool is_ignored_buffer(const std::string& name) {
  return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias");
}

std::string strip_prefix(const std::string& name) {
  static const std::string prefix = "transformer.";
  return name.compare(0, prefix.size(), prefix) == 0 ? name.substr(prefix.size()) : name;
}

// A GPT-2 config.json is about a kilobyte; anything near this is not one.
constexpr std::uint64_t kMaxConfigJsonBytes = 1 << 20;

// Refuses a model file whose header names a tensor the config does not imply, or gives one a
// different shape, before any tensor data is read (a sparse file may declare gigabytes).
void check_model_header(const nn::GPTConfig& config, const std::string& file,
                        const std::vector<std::pair<std::string, Shape>>& entries) {
  LMF_CHECK(config.n_layer <= static_cast<int64_t>(entries.size()), file, ": holds ",
            entries.size(), " tensors, far fewer than ", kConfigFile, " (n_layer=", config.n_layer,
            ") implies (", 4 + 12 * config.n_layer, ")");
  std::map<std::string, Shape> expected;
  for (const FileTensor& ft : hf_tensor_shapes(config)) expected.emplace(ft.name, ft.shape);
  for (const auto& [name, shape] : entries) {
    const std::string key = strip_prefix(name);
    if (is_ignored_buffer(key)) {
      // Skipped, but still read: no bigger than the causal mask (1, 1, n_positions, n_positions).
      const int64_t limit = config.block_size * config.block_size;
      int64_t numel = 1;  // saturating at limit + 1 (dims are non-negative here)
      for (int64_t d : shape) numel = d != 0 && numel > limit / d ? limit + 1 : numel * d;
      LMF_CHECK(numel <= limit, file, ": tensor \"", clip(name), "\" has shape ",
                clip(shape_str(shape)), ", larger than the causal mask of n_positions=", config.block_size);
      continue;
    }
    auto it = expected.find(key == "lm_head.weight" ? std::string("wte.weight") : key);
    LMF_CHECK(it != expected.end(), file, ": unexpected tensor \"", clip(name),
              "\" for a GPT-2 model");
    LMF_CHECK(it->second == shape, file, ": tensor \"", clip(name), "\" has shape ",
              clip(shape_str(shape)), " but ", kConfigFile, " (n_layer=", config.n_layer,
              ", n_embd=", config.n_embd, ", n_positions=", config.block_size,
              ", vocab_size=", config.vocab_size, ") implies ", shape_str(it->second));
  }
}

int64_t read_positive_int(const json& config, const std::string& key, const std::string& file) {
  LMF_CHECK(config.contains(key), file, ": missing key \"", key, "\"");
  const json& v = config[key];
  LMF_CHECK(v.is_number_integer(), file, ": key \"", key, "\" must be an integer, got ", json_brief(v));
  const int64_t n = v.get<int64_t>();
  LMF_CHECK(n > 0, file, ": key \"", key, "\" must be positive, got ", n);
  // Far beyond any real model, and small enough that the derived shapes cannot overflow.
  LMF_CHECK(n <= (int64_t{1} << 31), file, ": key \"", key, "\" is implausibly large: ", n);
  return n;
}

}  // namespace

// --- AtomicDir ---------------------------------------------------------------------------------

AtomicDir::AtomicDir(fs::path target) : target_(std::move(target)) {
  LMF_CHECK(!target_.empty(), "checkpoint directory path is empty");
  // A trailing slash would make the temporary a child of the target instead of a sibling.
  if (!target_.has_filename()) target_ = target_.parent_path();
  std::error_code ec;
  if (target_.has_parent_path()) {
    fs::create_directories(target_.parent_path(), ec);
    LMF_CHECK(!ec, target_.parent_path().string(), ": cannot create directory: ", ec.message());
  }
  std::string pattern = target_.string() + ".tmp-XXXXXX";
  LMF_CHECK(::mkdtemp(pattern.data()) != nullptr, pattern, ": cannot create directory: ",
            std::strerror(errno));
  tmp_ = pattern;
}

AtomicDir::~AtomicDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

namespace {
void fsync_path(const fs::path& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  LMF_CHECK(fd >= 0, path.string(), ": cannot open for fsync: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Directories on some filesystems refuse fsync (EINVAL); their entries are durable anyway.
  LMF_CHECK(rc == 0 || (directory && err == EINVAL), path.string(), ": fsync failed: ",
            std::strerror(err));
}
}  // namespace

void AtomicDir::commit() {
  LMF_CHECK(!committed_, target_.string(), ": AtomicDir committed twice");
  for (const auto& entry : fs::recursive_directory_iterator(tmp_))
    fsync_path(entry.path(), entry.is_directory());
  fsync_path(tmp_, true);

  std::error_code ec;
  const bool target_exists = fs::exists(fs::symlink_status(target_, ec));
  if (!target_exists) {
    LMF_CHECK(::rename(tmp_.c_str(), target_.c_str()) == 0, target_.string(),
              ": cannot rename ", tmp_.string(), " into place: ", std::strerror(errno));
  } else {
    LMF_CHECK(fs::is_directory(fs::symlink_status(target_, ec)), target_.string(),
              ": exists and is not a directory; refusing to replace it");
    // Swap in one step: the target always names a complete directory.
    if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, target_.c_str(), RENAME_EXCHANGE) != 0) {
      // Filesystems without RENAME_EXCHANGE: move the old directory aside, then the new one in.
      // The old one survives under its aside name until the new one is in place.
      fs::path aside = tmp_;
      aside += ".old";
      LMF_CHECK(::rename(target_.c_str(), aside.c_str()) == 0, target_.string(),
                ": cannot move the previous directory aside: ", std::strerror(errno));
      if (::rename(tmp_.c_str(), target_.c_str()) != 0) {
        const int err = errno;
        ::rename(aside.c_str(), target_.c_str());
        throw Error(str(target_.string(), ": cannot rename ", tmp_.string(), " into place: ",
                        std::strerror(err)));
      }
      fs::remove_all(aside, ec);
    } else {
      fs::remove_all(tmp_, ec);  // tmp_ now names the previous directory
    }
  }
  committed_ = true;
  fsync_path(target_.has_parent_path() ? target_.parent_path() : fs::path("."), true);
}

// --- config.json -------------------------------------------------------------------------------

std::string gpt_config_json(const nn::GPTConfig& c) { return nn::gpt2_config_json(c); }

nn::GPTConfig read_gpt_config(const fs::path& path) {
  const std::string file = path.string();
  json j = parse_untrusted_json(read_regular_file(path, kMaxConfigJsonBytes), file);
  LMF_CHECK(j.is_object(), file, ": not a JSON object");

  if (j.contains("model_type"))
    LMF_CHECK(j["model_type"] == "gpt2", file, ": key \"model_type\" is ", json_brief(j["model_type"]),
              "; only \"gpt2\" models are supported");
  nn::GPTConfig c;
  c.n_layer = read_positive_int(j, "n_layer", file);
  c.n_head = read_positive_int(j, "n_head", file);
  c.n_embd = read_positive_int(j, "n_embd", file);
  c.vocab_size = read_positive_int(j, "vocab_size", file);
  c.block_size = read_positive_int(j, j.contains("n_positions") ? "n_positions" : "n_ctx", file);
  if (j.contains("resid_pdrop")) {
    LMF_CHECK(j["resid_pdrop"].is_number(), file, ": key \"resid_pdrop\" must be a number");
    c.dropout = j["resid_pdrop"].get<float>();
  } else {
    c.dropout = 0.f;
  }
  if (j.contains("bias")) {
    LMF_CHECK(j["bias"].is_boolean(), file, ": key \"bias\" must be true or false");
    c.bias = j["bias"].get<bool>();
  }
  if (j.contains("layer_norm_epsilon")) {
    const json& eps = j["layer_norm_epsilon"];
    LMF_CHECK(eps.is_number() && std::abs(eps.get<double>() - 1e-5) <= 1e-12, file,
              ": key \"layer_norm_epsilon\" is ", json_brief(eps), "; only 1e-5 is supported");
  }
  if (j.contains("activation_function")) {
    const json& act = j["activation_function"];
    LMF_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh", file,
              ": key \"activation_function\" is ", json_brief(act),
              "; only the tanh GELU (\"gelu_new\") is supported");
  }
  if (j.contains("n_inner") && !j["n_inner"].is_null()) {
    LMF_CHECK(j["n_inner"].is_number_integer() && j["n_inner"].get<int64_t>() == 4 * c.n_embd,
              file, ": key \"n_inner\" is ", json_brief(j["n_inner"]), "; only 4 * n_embd (",
              4 * c.n_embd, ") is supported");
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(str(file, ": ", e.what()));
  }
  return c;
}

// --- model files -------------------------------------------------------------------------------

namespace {

// GPT-2's file: the table's tensors in its order, zero biases for a bias-free model.
void write_gpt2_tensors(const nn::CausalLM& model, const fs::path& dir) {
  const auto& gpt = dynamic_cast<const nn::GPT&>(model);
  const nn::GPTConfig& config = gpt.config();
  NamedTensors tensors;
  for (const FileTensor& ft : hf_tensor_shapes(config)) {
    if (!gpt.has_parameter(ft.name)) {
      // Only biases of a bias-free model are absent; Hugging Face's layers always have them.
      LMF_CHECK(ft.is_bias && !config.bias, "save_gpt: the model has no parameter \"", ft.name,
                "\"");
      tensors.emplace_back(ft.name, Tensor::zeros(ft.shape));
      continue;
    }
    Tensor p = gpt.parameter(ft.name);
    tensors.emplace_back(ft.name, ft.conv1d ? transpose_2d(p) : p);
  }
  write_safetensors(dir / kModelFile, tensors, {{"format", "pt"}});
}

// Any other model: every parameter but the LoRA adapters, under its checkpoint name.
void write_named_tensors(const nn::CausalLM& model, const fs::path& dir) {
  NamedTensors tensors;
  for (const auto& [name, p] : model.named_parameters()) {
    if (ends_with(name, ".lora_A") || ends_with(name, ".lora_B")) continue;
    const nn::CheckpointName to = model.checkpoint_name(name);
    const Tensor host = p.to(Device::cpu());
    tensors.emplace_back(to.name, to.transposed ? transpose_2d(host) : host);
  }
  write_safetensors(dir / kModelFile, tensors, {{"format", "pt"}});
}

std::unique_ptr<nn::GPT> load_gpt2(const fs::path& dir, uint64_t seed);
std::unique_ptr<nn::CausalLM> load_llama_family(const fs::path& dir, uint64_t seed) { return load_llama(dir, seed); }

// The architectures a checkpoint directory can hold, by config.json's model_type. A new model
// family is one entry: its loader (config.json + model.safetensors -> a model on the CPU) and its
// writer of model.safetensors.
struct Architecture {
  const char* model_type;
  std::unique_ptr<nn::CausalLM> (*load)(const fs::path& dir, uint64_t seed);
  void (*write)(const nn::CausalLM& model, const fs::path& dir);
};
const Architecture kArchitectures[] = {
    {"gpt2", [](const fs::path& dir, uint64_t seed) -> std::unique_ptr<nn::CausalLM> { return load_gpt2(dir, seed); },
     write_gpt2_tensors},
    {"llama", load_llama_family, write_named_tensors},
    {"qwen2", load_llama_family, write_named_tensors},
    {"qwen3", load_llama_family, write_named_tensors},
    {"mistral", load_llama_family, write_named_tensors},
};

const Architecture* find_architecture(const std::string& model_type) {
  for (const Architecture& a : kArchitectures)
    if (model_type == a.model_type) return &a;
  return nullptr;
}

std::string supported_types() {
  std::string out;
  for (const Architecture& a : kArchitectures) out += std::string(out.empty() ? "" : ", ") + "\"" + a.model_type + "\"";
  return out;
}

// config.json's model_type ("gpt2" when absent, as GPT-2 configs of old tools omit it).
std::string read_model_type(const fs::path& path) {
  const std::string file = path.string();
  const json j = parse_untrusted_json(read_regular_file(path, kMaxConfigJsonBytes), file);
  LMF_CHECK(j.is_object(), file, ": not a JSON object");
  if (!j.contains("model_type")) return "gpt2";
  LMF_CHECK(j["model_type"].is_string() && find_architecture(j["model_type"].get<std::string>()), file,
            ": key \"model_type\" is ", json_brief(j["model_type"]), "; only ", supported_types(),
            " models are supported");
  return j["model_type"].get<std::string>();
}

}  // namespace

void write_model_files(const nn::CausalLM& model, const fs::path& dir) {
  const Architecture* arch = find_architecture(model.arch());
  (arch ? arch->write : write_named_tensors)(model, dir);
  write_file_atomic(dir / kConfigFile, model.hf_config_json());
  if (nn::has_lora(model)) write_adapter_files(model, dir);
}

void save(const nn::CausalLM& model, const fs::path& dir) {
  AtomicDir out(dir);
  write_model_files(model, out.path());
  out.commit();
}

void save_gpt(const nn::GPT& gpt, const fs::path& dir) { save(gpt, dir); }

std::unique_ptr<nn::CausalLM> load_model(const fs::path& dir, uint64_t seed) {
  LMF_CHECK(fs::is_directory(dir), dir.string(), ": not a checkpoint directory");
  const Architecture* arch = find_architecture(read_model_type(dir / kConfigFile));
  std::unique_ptr<nn::CausalLM> model = arch->load(dir, seed);
  if (has_adapter_files(dir)) load_adapters(*model, dir);
  return model;
}

std::unique_ptr<nn::GPT> load_gpt(const fs::path& dir, uint64_t seed) {
  LMF_CHECK(fs::is_directory(dir), dir.string(), ": not a checkpoint directory");
  std::unique_ptr<nn::GPT> gpt = load_gpt2(dir, seed);
  if (has_adapter_files(dir)) load_adapters(*gpt, dir);
  return gpt;
}

namespace {

std::unique_ptr<nn::GPT> load_gpt2(const fs::path& dir, uint64_t seed) {
  const nn::GPTConfig config = read_gpt_config(dir / kConfigFile);
  const fs::path model_path = dir / kModelFile;
  const std::string file = model_path.string();
  LMF_CHECK(fs::exists(model_path), file, ": missing (a checkpoint needs ", kModelFile, ")");
  SafetensorsFile st = read_safetensors(model_path, [&](const auto& entries) {
    check_model_header(config, file, entries);
  });

  // Map stripped names to file names, refusing a name present in both styles.
  std::map<std::string, std::string> by_name;
  for (const auto& [name, t] : st.tensors) {
    const std::string key = strip_prefix(name);
    auto [it, fresh] = by_name.emplace(key, name);
    LMF_CHECK(fresh, file, ": tensor \"", key, "\" appears twice (\"", it->second, "\" and \"", name,
              "\")");
  }

  // Bound the config by the file before building per-layer tables from it: a hostile n_layer
  // must not allocate what the file could never fill. Near misses are left to the per-tensor
  // checks below, which name the missing tensor.
  LMF_CHECK(config.n_layer <= static_cast<int64_t>(by_name.size()), file, ": holds ",
            by_name.size(), " tensors, far fewer than ", kConfigFile, " (n_layer=", config.n_layer,
            ") implies (", 4 + 12 * config.n_layer, ")");

  nn::StateDict state;
  std::set<std::string> used;
  for (const FileTensor& ft : hf_tensor_shapes(config)) {
    auto it = by_name.find(ft.name);
    LMF_CHECK(it != by_name.end(), file, ": missing tensor \"", ft.name, "\"");
    used.insert(ft.name);
    const Tensor& t = st.tensors.at(it->second);
    LMF_CHECK(t.dtype() == DType::f32, file, ": tensor \"", it->second,
              "\" must be floating point, not ", dtype_name(t.dtype()));
    LMF_CHECK(t.shape() == ft.shape, file, ": tensor \"", it->second, "\" has shape ",
              shape_str(t.shape()), " but ", kConfigFile, " (n_layer=", config.n_layer,
              ", n_embd=", config.n_embd, ", n_positions=", config.block_size,
              ", vocab_size=", config.vocab_size, ") implies ", shape_str(ft.shape));
    if (ft.is_bias && !config.bias) {
      // The file carries zero biases for Hugging Face; non-zero ones would change the function.
      for (float v : t.to_vector())
        LMF_CHECK(v == 0.f, file, ": tensor \"", it->second, "\" is non-zero but ", kConfigFile,
                  " says \"bias\": false");
      continue;
    }
    state.emplace_back(ft.name, ft.conv1d ? transpose_2d(t) : t);
  }

  for (const auto& [key, name] : by_name) {
    if (used.count(key) || is_ignored_buffer(key)) continue;
    if (key == "lm_head.weight") {
      const Tensor& head = st.tensors.at(name);
      const Tensor& wte = st.tensors.at(by_name.at("wte.weight"));
      LMF_CHECK(head.shape() == wte.shape() && head.to_vector() == wte.to_vector(), file,
                ": tensor \"", name, "\" differs from wte.weight; untied language-model heads are "
                "not supported");
      continue;
    }
    throw Error(str(file, ": unexpected tensor \"", name, "\" for a GPT-2 model"));
  }

  auto gpt = std::make_unique<nn::GPT>(config, seed);
  gpt->load_state_dict(state, /*strict=*/true);
  return gpt;
}

}  // namespace

}  // namespace lmf::io
