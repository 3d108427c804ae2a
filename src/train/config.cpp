// YAML -> Config. One table lists every key with the member it sets and the check it must pass,
// so parsing, command-line overrides, "did you mean" suggestions and to_yaml() all follow from the
// same list and cannot drift apart.
#include "lmforge/train/config.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <charconv>
#include <limits>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "data/utf8.h"
#include "io/safe_file.h"
#include "lmforge/core/device.h"
#include "lmforge/core/error.h"

namespace lmf::train {
namespace {

// --- scalar conversion with messages that say what was expected -----------------------------

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

template <class T>
T convert(const YAML::Node& node, const char* expected) {
  if (!node.IsScalar()) throw Error(str("expected ", expected, ", got ", scalar_text(node)));
  T value;
  if (!YAML::convert<T>::decode(node, value))
    throw Error(str("expected ", expected, ", got ", scalar_text(node)));
  return value;
}

// Integers are decimal, without leading zeros: YAML 1.1 would read `010` as eight, which no one
// writing a config means, so it is refused rather than guessed.
bool decimal_integer(const std::string& t, bool allow_minus) {
  std::size_t i = allow_minus && !t.empty() && t[0] == '-' ? 1 : 0;
  if (i == t.size() || (t[i] == '0' && t.size() > i + 1)) return false;
  return std::all_of(t.begin() + static_cast<std::ptrdiff_t>(i), t.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

template <class T>
T convert_integer(const YAML::Node& node, const char* expected) {
  if (!node.IsScalar()) throw Error(str("expected ", expected, ", got ", scalar_text(node)));
  const std::string& t = node.Scalar();
  if (!decimal_integer(t, std::is_signed_v<T>))
    throw Error(str("expected ", expected, " (decimal, no leading zeros), got '", io::clip(t), "'"));
  T value{};
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
  if (ec != std::errc() || end != t.data() + t.size())
    throw Error(str("expected ", expected, " in [", std::numeric_limits<T>::min(), ", ",
                    std::numeric_limits<T>::max(), "], got '", io::clip(t), "'"));
  return value;
}

void read(const YAML::Node& n, int64_t& v) { v = convert_integer<int64_t>(n, "an integer"); }
void read(const YAML::Node& n, uint64_t& v) { v = convert_integer<uint64_t>(n, "a non-negative integer"); }
void read(const YAML::Node& n, int& v) { v = convert_integer<int>(n, "an integer"); }
void read(const YAML::Node& n, float& v) { v = convert<float>(n, "a number"); }
void read(const YAML::Node& n, double& v) { v = convert<double>(n, "a number"); }
void read(const YAML::Node& n, bool& v) { v = convert<bool>(n, "true or false"); }
void read(const YAML::Node& n, std::string& v) {
  if (n.IsNull()) {
    v.clear();
    return;
  }
  v = convert<std::string>(n, "a string");
  // Strings end up in JSON (metrics, trainer state); invalid UTF-8 is refused here, by key,
  // rather than by the JSON library hours into a run.
  for (std::size_t pos = 0, len = 0; pos < v.size(); pos += len) {
    uint32_t cp = 0;
    if (!data::decode_utf8(v, pos, &cp, &len)) throw Error("expected a UTF-8 string, got invalid UTF-8");
  }
}
void read(const YAML::Node& n, std::vector<std::string>& v) {
  if (!n.IsSequence()) throw Error(str("expected a list of strings, got ", scalar_text(n)));
  v.clear();
  for (const auto& item : n) {
    std::string one;
    if (!item.IsScalar()) throw Error(str("expected a list of strings, got ", scalar_text(item)));
    read(item, one);
    v.push_back(std::move(one));
  }
}
void read(const YAML::Node& n, std::array<float, 2>& v) {
  if (!n.IsSequence() || n.size() != 2)
    throw Error(str("expected a list of two numbers, got ", scalar_text(n)));
  v = {convert<float>(n[0], "a number"), convert<float>(n[1], "a number")};
}

template <class T>
YAML::Node write(const T& value) {
  YAML::Node node;
  node = value;
  return node;
}
YAML::Node write(const std::array<float, 2>& value) {
  YAML::Node node(YAML::NodeType::Sequence);
  node.push_back(value[0]);
  node.push_back(value[1]);
  return node;
}
YAML::Node write(const std::vector<std::string>& value) {
  YAML::Node node(YAML::NodeType::Sequence);
  for (const auto& s : value) node.push_back(s);
  return node;
}

// --- the key table -------------------------------------------------------------------------

struct Field {
  std::string key;
  std::function<void(Config&, const YAML::Node&)> set;  // throws Error("expected ...")
  std::function<YAML::Node(const Config&)> get;
};

// A check returns an empty string when the value is fine, else what it must be.
template <class T>
using Check = std::function<std::string(const T&)>;

template <class T, class Access>
Field field(std::string key, Access access, Check<T> check = nullptr) {
  return Field{
      std::move(key),
      [access, check](Config& c, const YAML::Node& n) {
        T value{};
        read(n, value);
        if (check) {
          const std::string problem = check(value);
          if (!problem.empty()) throw Error(problem);
        }
        access(c) = value;
      },
      [access](const Config& c) { return write(access(const_cast<Config&>(c))); }};
}

template <class T>
Check<T> at_least(T low) {
  return [low](const T& v) { return v >= low ? "" : str("must be >= ", low, ", got ", v); };
}
Check<float> in_range(float low, float high) {  // [low, high)
  return [low, high](const float& v) {
    return v >= low && v < high ? "" : str("must be in [", low, ", ", high, "), got ", v);
  };
}
Check<std::string> one_of(std::vector<std::string> options) {
  return [options](const std::string& v) {
    if (std::find(options.begin(), options.end(), v) != options.end()) return std::string();
    std::string list;
    for (const auto& o : options) list += (list.empty() ? "" : ", ") + o;
    return str("must be one of ", list, ", got '", v, "'");
  };
}

// --- kinds: every enum's YAML spellings, in documentation order -------------------------------

template <class E>
using Spellings = std::vector<std::pair<const char*, E>>;

const Spellings<DeviceKind> kDeviceKinds = {{"auto", DeviceKind::automatic}, {"cpu", DeviceKind::cpu},
                                            {"cuda", DeviceKind::cuda}};
const Spellings<Precision> kPrecisions = {{"fp32", Precision::fp32}, {"bf16", Precision::bf16}};
const Spellings<ModelArch> kArchs = {{"gpt2", ModelArch::gpt2}, {"llama", ModelArch::llama}};
const Spellings<data::LoaderOrder> kOrders = {{"random", data::LoaderOrder::random},
                                              {"sequential", data::LoaderOrder::sequential}};
const Spellings<optim::ScheduleKind> kSchedules = {{"constant", optim::ScheduleKind::constant},
                                                   {"cosine", optim::ScheduleKind::cosine}};
const Spellings<NanPolicy> kNanPolicies = {{"stop", NanPolicy::stop}, {"skip", NanPolicy::skip}};
const Spellings<OptimizerKind> kOptimizers = {{"adamw", OptimizerKind::adamw}, {"muon", OptimizerKind::muon}};
const Spellings<LossTargets> kLossTargets = {{"all", LossTargets::all}, {"assistant", LossTargets::assistant}};
const Spellings<EarlyStoppingMetric> kMetrics = {{"val_loss", EarlyStoppingMetric::val_loss}};
const Spellings<CommBackend> kBackends = {{"auto", CommBackend::automatic}, {"none", CommBackend::none},
                                          {"mpi", CommBackend::mpi}, {"nccl", CommBackend::nccl}};
const Spellings<ProgressMode> kProgressModes = {{"auto", ProgressMode::automatic}, {"bar", ProgressMode::bar},
                                                {"plain", ProgressMode::plain}, {"none", ProgressMode::none}};

template <class E>
std::string spelling(const Spellings<E>& table, E value) {
  for (const auto& [name, v] : table)
    if (v == value) return name;
  throw Error(str("invalid enum value ", static_cast<int>(value)));
}

std::vector<std::string> names_of(const auto& table) {
  std::vector<std::string> out;
  for (const auto& entry : table) out.push_back(entry.first);
  return out;
}

// A key whose value is one of an enum's spellings; `read_as` may map other YAML forms first.
template <class E, class Access>
Field enum_field(std::string key, Access access, const Spellings<E>& table,
                 std::function<bool(const YAML::Node&, E&)> read_as = nullptr) {
  return Field{
      std::move(key),
      [access, &table, read_as](Config& c, const YAML::Node& n) {
        if (read_as && read_as(n, access(c))) return;
        std::string text;
        read(n, text);
        const std::string problem = one_of(names_of(table))(text);
        if (!problem.empty()) throw Error(problem);
        for (const auto& [name, v] : table)
          if (text == name) access(c) = v;
      },
      [access, &table](const Config& c) { return write(spelling(table, access(const_cast<Config&>(c)))); }};
}

const std::vector<Field>& fields() {
  static const std::vector<Field> table = [] {
    std::vector<Field> f;
    // run
    f.push_back(field<std::string>("run.name", [](Config& c) -> auto& { return c.run.name; }));
    f.push_back(field<std::string>("run.out_dir", [](Config& c) -> auto& { return c.run.out_dir; },
        [](const std::string& v) { return v.empty() ? "must not be empty" : ""; }));
    f.push_back(field<uint64_t>("run.seed", [](Config& c) -> auto& { return c.run.seed; }));
    f.push_back(Field{"run.device",
        [](Config& c, const YAML::Node& n) {
          std::string text;
          read(n, text);
          c.run.device = DeviceSetting::parse(text);
        },
        [](const Config& c) { return write(c.run.device.str()); }});
    f.push_back(enum_field("run.precision", [](Config& c) -> auto& { return c.run.precision; }, kPrecisions));
    f.push_back(enum_field("run.matmul_precision", [](Config& c) -> auto& { return c.run.matmul_precision; }, kPrecisions));
    f.push_back(field<int>("run.threads", [](Config& c) -> auto& { return c.run.threads; },
        [](const int& v) {
          return v >= 0 && v <= io::kMaxThreads ? std::string()
                                                : str("must be in [0, ", io::kMaxThreads, "] (0 = all cores), got ", v);
        }));
    f.push_back(field<bool>("run.cuda_graph", [](Config& c) -> auto& { return c.run.cuda_graph; }));
    // data
    f.push_back(field<std::string>("data.train", [](Config& c) -> auto& { return c.data.train; }));
    f.push_back(field<std::string>("data.val", [](Config& c) -> auto& { return c.data.val; }));
    f.push_back(field<std::string>("data.tokenizer", [](Config& c) -> auto& { return c.data.tokenizer; }));
    f.push_back(enum_field("data.order", [](Config& c) -> auto& { return c.data.order; }, kOrders));
    // model
    f.push_back(field<std::string>("model.init", [](Config& c) -> auto& { return c.model.init; },
        [](const std::string& v) { return v.empty() ? "must be scratch or a directory" : ""; }));
    f.push_back(field<int64_t>("model.n_layer", [](Config& c) -> auto& { return c.model.n_layer; }, at_least<int64_t>(1)));
    f.push_back(field<int64_t>("model.n_head", [](Config& c) -> auto& { return c.model.n_head; }, at_least<int64_t>(1)));
    f.push_back(field<int64_t>("model.n_embd", [](Config& c) -> auto& { return c.model.n_embd; }, at_least<int64_t>(1)));
    f.push_back(field<int64_t>("model.block_size", [](Config& c) -> auto& { return c.model.block_size; }, at_least<int64_t>(1)));
    f.push_back(field<int64_t>("model.vocab_size", [](Config& c) -> auto& { return c.model.vocab_size; }, at_least<int64_t>(0)));
    f.push_back(field<float>("model.dropout", [](Config& c) -> auto& { return c.model.dropout; }, in_range(0.f, 1.f)));
    f.push_back(field<bool>("model.bias", [](Config& c) -> auto& { return c.model.bias; }));
    f.push_back(enum_field("model.arch", [](Config& c) -> auto& { return c.model.arch; }, kArchs));
    f.push_back(field<int64_t>("model.n_kv_head", [](Config& c) -> auto& { return c.model.n_kv_head; }, at_least<int64_t>(0)));
    f.push_back(field<int64_t>("model.head_dim", [](Config& c) -> auto& { return c.model.head_dim; }, at_least<int64_t>(0)));
    f.push_back(field<int64_t>("model.intermediate_size", [](Config& c) -> auto& { return c.model.intermediate_size; }, at_least<int64_t>(0)));
    f.push_back(field<double>("model.rope_theta", [](Config& c) -> auto& { return c.model.rope_theta; },
        [](const double& v) { return v > 0 ? std::string() : str("must be positive, got ", v); }));
    f.push_back(field<double>("model.rms_norm_eps", [](Config& c) -> auto& { return c.model.rms_norm_eps; },
        [](const double& v) { return v > 0 && v < 1 ? std::string() : str("must be in (0, 1), got ", v); }));
    f.push_back(field<bool>("model.tie_embeddings", [](Config& c) -> auto& { return c.model.tie_embeddings; }));
    f.push_back(field<bool>("model.qkv_bias", [](Config& c) -> auto& { return c.model.qkv_bias; }));
    f.push_back(field<bool>("model.qk_norm", [](Config& c) -> auto& { return c.model.qk_norm; }));
    // training
    f.push_back(field<int64_t>("training.batch_size", [](Config& c) -> auto& { return c.training.batch_size; }, at_least<int64_t>(1)));
    f.push_back(field<int64_t>("training.grad_accum_steps", [](Config& c) -> auto& { return c.training.grad_accum_steps; }, at_least<int64_t>(1)));
    f.push_back(field<int64_t>("training.max_steps", [](Config& c) -> auto& { return c.training.max_steps; }, at_least<int64_t>(0)));
    f.push_back(field<int64_t>("training.max_tokens", [](Config& c) -> auto& { return c.training.max_tokens; }, at_least<int64_t>(0)));
    f.push_back(field<double>("training.max_time", [](Config& c) -> auto& { return c.training.max_time; }, at_least(0.0)));
    f.push_back(field<float>("training.lr", [](Config& c) -> auto& { return c.training.lr; },
        [](const float& v) { return v > 0 ? "" : str("must be > 0, got ", v); }));
    f.push_back(field<float>("training.min_lr", [](Config& c) -> auto& { return c.training.min_lr; }, at_least(0.f)));
    f.push_back(field<int64_t>("training.warmup_steps", [](Config& c) -> auto& { return c.training.warmup_steps; }, at_least<int64_t>(0)));
    f.push_back(enum_field("training.schedule", [](Config& c) -> auto& { return c.training.schedule; }, kSchedules));
    f.push_back(field<std::array<float, 2>>("training.betas", [](Config& c) -> auto& { return c.training.betas; },
        [](const std::array<float, 2>& b) {
          return b[0] >= 0 && b[0] < 1 && b[1] >= 0 && b[1] < 1 ? "" : "must both be in [0, 1)";
        }));
    f.push_back(field<float>("training.eps", [](Config& c) -> auto& { return c.training.eps; },
        [](const float& v) { return v > 0 ? "" : str("must be > 0, got ", v); }));
    f.push_back(field<float>("training.weight_decay", [](Config& c) -> auto& { return c.training.weight_decay; }, at_least(0.f)));
    f.push_back(field<float>("training.grad_clip", [](Config& c) -> auto& { return c.training.grad_clip; }, at_least(0.f)));
    f.push_back(enum_field("training.optimizer", [](Config& c) -> auto& { return c.training.optimizer; }, kOptimizers));
    f.push_back(field<float>("training.muon_lr", [](Config& c) -> auto& { return c.training.muon_lr; },
        [](const float& v) { return v > 0 && std::isfinite(v) ? "" : str("must be > 0, got ", v); }));
    f.push_back(field<float>("training.muon_momentum", [](Config& c) -> auto& { return c.training.muon_momentum; },
        [](const float& v) { return v >= 0 && v < 1 ? "" : str("must be in [0, 1), got ", v); }));
    f.push_back(field<float>("training.muon_weight_decay", [](Config& c) -> auto& { return c.training.muon_weight_decay; }, at_least(0.f)));
    f.push_back(field<int>("training.muon_ns_steps", [](Config& c) -> auto& { return c.training.muon_ns_steps; },
        [](const int& v) { return v >= 1 && v <= 100 ? std::string() : str("must be in [1, 100], got ", v); }));
    f.push_back(enum_field("training.on_nan", [](Config& c) -> auto& { return c.training.on_nan; }, kNanPolicies));
    f.push_back(enum_field("training.loss", [](Config& c) -> auto& { return c.training.loss; }, kLossTargets));
    f.push_back(field<float>("training.spike_zscore", [](Config& c) -> auto& { return c.training.spike_zscore; }, at_least(0.f)));
    // eval and early stopping
    f.push_back(field<int64_t>("eval.interval", [](Config& c) -> auto& { return c.eval.interval; }, at_least<int64_t>(0)));
    f.push_back(field<int64_t>("eval.batches", [](Config& c) -> auto& { return c.eval.batches; }, at_least<int64_t>(1)));
    f.push_back(field<std::vector<std::string>>("eval.tasks", [](Config& c) -> auto& { return c.eval.tasks; }));
    f.push_back(field<std::string>("eval.text", [](Config& c) -> auto& { return c.eval.text; }));
    f.push_back(field<bool>("early_stopping.enabled", [](Config& c) -> auto& { return c.early_stopping.enabled; }));
    f.push_back(enum_field("early_stopping.metric", [](Config& c) -> auto& { return c.early_stopping.metric; }, kMetrics));
    f.push_back(field<int64_t>("early_stopping.patience", [](Config& c) -> auto& { return c.early_stopping.patience; }, at_least<int64_t>(1)));
    f.push_back(field<float>("early_stopping.min_delta", [](Config& c) -> auto& { return c.early_stopping.min_delta; }, at_least(0.f)));
    f.push_back(field<bool>("early_stopping.restore_best", [](Config& c) -> auto& { return c.early_stopping.restore_best; }));
    // checkpoints
    f.push_back(field<int64_t>("checkpoint.interval", [](Config& c) -> auto& { return c.checkpoint.interval; }, at_least<int64_t>(0)));
    f.push_back(field<int64_t>("checkpoint.keep_last", [](Config& c) -> auto& { return c.checkpoint.keep_last; }, at_least<int64_t>(1)));
    f.push_back(Field{"checkpoint.resume",
        [](Config& c, const YAML::Node& n) {
          std::string text;
          read(n, text);
          if (text.empty()) throw Error("must be auto, never or a checkpoint path");
          c.checkpoint.resume = text == "auto" ? ResumeMode::automatic : text == "never" ? ResumeMode::never : ResumeMode::path;
          c.checkpoint.resume_path = c.checkpoint.resume == ResumeMode::path ? text : std::string();
        },
        [](const Config& c) {
          const auto& k = c.checkpoint;
          return write(std::string(k.resume == ResumeMode::automatic ? "auto" : k.resume == ResumeMode::never ? "never" : k.resume_path));
        }});
    f.push_back(field<bool>("checkpoint.force_fresh", [](Config& c) -> auto& { return c.checkpoint.force_fresh; }));
    // fine-tuning
    f.push_back(field<std::vector<std::string>>("finetune.freeze", [](Config& c) -> auto& { return c.finetune.freeze; }));
    f.push_back(field<int64_t>("finetune.lora.rank", [](Config& c) -> auto& { return c.finetune.lora.rank; }, at_least<int64_t>(0)));
    f.push_back(field<float>("finetune.lora.alpha", [](Config& c) -> auto& { return c.finetune.lora.alpha; },
        [](const float& v) { return v > 0 ? "" : str("must be > 0, got ", v); }));
    f.push_back(field<float>("finetune.lora.dropout", [](Config& c) -> auto& { return c.finetune.lora.dropout; }, in_range(0.f, 1.f)));
    // Which names exist depends on the model (GPT-2's attn.c_attn, Llama's self_attn.q_proj), so
    // they are checked against it when the adapters are attached.
    f.push_back(field<std::vector<std::string>>("finetune.lora.targets", [](Config& c) -> auto& { return c.finetune.lora.targets; },
        [](const std::vector<std::string>& v) {
          for (std::size_t i = 0; i < v.size(); ++i)
            if (v[i].empty() || std::find(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v[i]) != v.begin() + static_cast<std::ptrdiff_t>(i))
              return v[i].empty() ? std::string("an empty target name") : str("'", v[i], "' is listed twice");
          return std::string();
        }));
    // distributed and logging
    f.push_back(enum_field("distributed.backend", [](Config& c) -> auto& { return c.distributed.backend; }, kBackends));
    f.push_back(field<int>("distributed.zero", [](Config& c) -> auto& { return c.distributed.zero; },
        [](const int& v) { return v == 0 || v == 1 ? "" : str("must be 0 or 1, got ", v); }));
    f.push_back(field<double>("distributed.timeout", [](Config& c) -> auto& { return c.distributed.timeout; },
        [](const double& v) { return v > 0 ? std::string() : str("must be positive seconds, got ", v); }));
    f.push_back(field<int64_t>("logging.interval", [](Config& c) -> auto& { return c.logging.interval; }, at_least<int64_t>(1)));
    // `progress: false`, the YAML boolean users write, means none.
    f.push_back(enum_field<ProgressMode>("logging.progress", [](Config& c) -> auto& { return c.logging.progress; }, kProgressModes,
        [](const YAML::Node& n, ProgressMode& mode) {
          bool flag = true;
          if (!n.IsScalar() || n.Tag() == "!" || !YAML::convert<bool>::decode(n, flag) || flag) return false;
          mode = ProgressMode::none;
          return true;
        }));
    f.push_back(field<double>("logging.peak_gflops", [](Config& c) -> auto& { return c.logging.peak_gflops; }, at_least(0.0)));
    return f;
  }();
  return table;
}

const Field* find_field(const std::string& key) {
  for (const auto& f : fields())
    if (f.key == key) return &f;
  return nullptr;
}

bool is_section(const std::string& prefix) {
  for (const auto& f : fields())
    if (f.key.rfind(prefix + ".", 0) == 0) return true;
  return false;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t next = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = row[j];
      row[j] = next;
    }
  }
  return row[b.size()];
}

std::string closest_key(const std::string& key) {
  std::string best;
  std::size_t best_distance = SIZE_MAX;
  const std::string leaf = key.substr(key.rfind('.') + 1);
  for (const auto& f : fields()) {
    // Compare whole keys, and also the last component alone (a right name in the wrong section).
    const std::string f_leaf = f.key.substr(f.key.rfind('.') + 1);
    const std::size_t d = std::min(edit_distance(key, f.key), edit_distance(leaf, f_leaf) + 1);
    if (d < best_distance) best_distance = d, best = f.key;
  }
  return best;
}

std::string unknown_key_message(const std::string& key) {
  return str("unknown key '", key, "' (did you mean '", closest_key(key), "'?)");
}

// Largest config file read: real ones are a few kilobytes.
constexpr std::uint64_t kMaxConfigBytes = 1 << 20;

// A first pass over the YAML events, before any node is built: one document only, no anchors or
// aliases (nothing a config needs, and the way to make a small file expand enormously), scalar
// keys only, and no key twice in one mapping (yaml-cpp would keep one of them silently).
class StrictYaml : public YAML::EventHandler {
 public:
  explicit StrictYaml(std::string source) : source_(std::move(source)) {}
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override { value(mark, anchor, "~"); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    fail(mark, "aliases (*name) are not accepted in a config");
  }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                const std::string& text) override {
    value(mark, anchor, text);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    container(mark, anchor);
    frames_.push_back({false, {}, false});
  }
  void OnSequenceEnd() override { end(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    container(mark, anchor);
    frames_.push_back({true, {}, true});
  }
  void OnMapEnd() override { end(); }
  void OnAnchor(const YAML::Mark& mark, const std::string&) override {
    fail(mark, "anchors (&name) are not accepted in a config");
  }

 private:
  struct Frame {
    bool map;
    std::vector<std::string> keys;
    bool expect_key;
  };

  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& what) const {
    throw Error(str(source_, ":", mark.line + 1, ": ", what));
  }
  void anchor_check(const YAML::Mark& mark, YAML::anchor_t anchor) const {
    if (anchor != YAML::NullAnchor) fail(mark, "anchors (&name) are not accepted in a config");
  }
  void value(const YAML::Mark& mark, YAML::anchor_t anchor, const std::string& text) {
    anchor_check(mark, anchor);
    if (frames_.empty() || !frames_.back().map) return;
    Frame& f = frames_.back();
    if (f.expect_key) {
      if (std::find(f.keys.begin(), f.keys.end(), text) != f.keys.end())
        fail(mark, str("key '", io::clip(text), "' appears twice in one section"));
      f.keys.push_back(text);
    }
    f.expect_key = !f.expect_key;
  }
  void container(const YAML::Mark& mark, YAML::anchor_t anchor) {
    anchor_check(mark, anchor);
    if (frames_.empty() || !frames_.back().map) return;
    Frame& f = frames_.back();
    if (f.expect_key) fail(mark, "keys must be plain names, not lists or mappings");
    f.expect_key = true;
  }
  void end() { frames_.pop_back(); }

  std::string source_;
  std::vector<Frame> frames_;
};

void check_yaml_structure(const std::string& yaml, const std::string& source) {
  std::istringstream in(yaml);
  YAML::Parser parser(in);
  StrictYaml handler(source);
  int documents = 0;
  try {
    while (parser.HandleNextDocument(handler))
      if (++documents > 1) throw Error(str(source, ": holds more than one YAML document (---)"));
  } catch (const YAML::Exception& e) {
    throw Error(str(source, ":", e.mark.line + 1, ": invalid YAML: ", io::clip(e.msg)));
  }
}

struct Parser {
  Config& config;
  std::string source;

  std::string where(const YAML::Node& node) const {
    const YAML::Mark mark = node.Mark();
    return mark.is_null() ? source : str(source, ":", mark.line + 1);
  }

  void walk(const YAML::Node& map, const std::string& prefix) {
    for (const auto& item : map) {
      const YAML::Node& key_node = item.first;
      const YAML::Node& value = item.second;
      const std::string key = (prefix.empty() ? "" : prefix + ".") + io::clip(key_node.Scalar(), 100);
      if (const Field* f = find_field(key)) {
        try {
          f->set(config, value);
        } catch (const Error& e) {
          throw Error(str(where(key_node), ": ", key, ": ", e.what()));
        }
      } else if (is_section(key)) {
        if (value.IsNull()) continue;  // an empty section keeps its defaults
        if (!value.IsMap())
          throw Error(str(where(key_node), ": ", key, ": expected a mapping of keys, got ", scalar_text(value)));
        walk(value, key);
      } else {
        throw Error(str(where(key_node), ": ", unknown_key_message(key)));
      }
    }
  }
};

void apply_override(Config& config, const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw Error(str("override '", io::clip(text), "': expected KEY=VALUE, for example training.lr=3e-4"));
  const std::string key = text.substr(0, eq), value = text.substr(eq + 1);
  const Field* f = find_field(key);
  if (!f) throw Error(str("override '", io::clip(text), "': ", unknown_key_message(io::clip(key, 100))));
  YAML::Node node;
  try {
    check_yaml_structure(value, str("override '", io::clip(text), "'"));
    node = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw Error(str("override '", io::clip(text), "': ", io::clip(e.msg)));
  }
  try {
    f->set(config, node);
  } catch (const Error& e) {
    throw Error(str("override '", io::clip(text), "': ", key, ": ", e.what()));
  }
}

}  // namespace

Config Config::parse(const std::string& yaml, const std::string& source,
                     const std::vector<std::string>& overrides) {
  check_yaml_structure(yaml, source);
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw Error(str(source, ":", e.mark.line + 1, ": invalid YAML: ", io::clip(e.msg)));
  }
  Config config;
  if (!root.IsNull()) {
    if (!root.IsMap()) throw Error(str(source, ": expected a mapping of sections at the top level"));
    Parser{config, source}.walk(root, "");
  }
  for (const auto& o : overrides) apply_override(config, o);
  try {
    config.validate();
  } catch (const Error& e) {
    throw Error(str(source, ": ", e.what()));
  }
  return config;
}

Config Config::load(const std::string& path, const std::vector<std::string>& overrides) {
  const std::string text =
      io::read_regular_file(path, kMaxConfigBytes, str("config file '", io::clip(path), "'"));
  return parse(text, path, overrides);
}

void Config::validate() const {
  // Counts are bounded far above any real run and far below int64 overflow, so the values the
  // trainer derives from them (steps from tokens, warmup fractions, step + interval) cannot wrap.
  constexpr int64_t kMaxCount = int64_t{1} << 53;
  const std::pair<const char*, int64_t> counts[] = {
      {"training.max_steps", training.max_steps},       {"training.max_tokens", training.max_tokens},
      {"training.warmup_steps", training.warmup_steps}, {"training.batch_size", training.batch_size},
      {"training.grad_accum_steps", training.grad_accum_steps},
      {"model.block_size", model.block_size},           {"eval.interval", eval.interval},
      {"eval.batches", eval.batches},                   {"checkpoint.interval", checkpoint.interval},
      {"checkpoint.keep_last", checkpoint.keep_last},   {"logging.interval", logging.interval},
      {"early_stopping.patience", early_stopping.patience}};
  for (const auto& [key, value] : counts)
    LMF_CHECK(value <= kMaxCount, key, ": must be at most 2^53 (", kMaxCount, "), got ", value);
  int64_t tokens_per_step = 0;
  LMF_CHECK(!__builtin_mul_overflow(training.batch_size, model.block_size, &tokens_per_step) &&
                !__builtin_mul_overflow(tokens_per_step, training.grad_accum_steps, &tokens_per_step) &&
                tokens_per_step <= kMaxCount,
            "training.batch_size x model.block_size x training.grad_accum_steps: the tokens per step "
            "must be at most 2^53");
  LMF_CHECK(std::isfinite(training.max_time) && training.max_time <= 1e9,
            "training.max_time: must be at most 1e9 seconds, got ", training.max_time);
  if (run.cuda_graph) {
    LMF_CHECK(run.device.kind != DeviceKind::cpu, "run.cuda_graph: true needs run.device: cuda (a CUDA graph "
              "records GPU work), got run.device: cpu");
    LMF_CHECK(training.grad_accum_steps == 1, "run.cuda_graph: true captures one micro-batch per step; "
              "training.grad_accum_steps is ", training.grad_accum_steps, " (accumulation is not captured yet)");
    LMF_CHECK(model.dropout == 0.f, "run.cuda_graph: true needs model.dropout: 0 (got ", model.dropout,
              "): a replayed step would repeat the captured dropout masks");
    LMF_CHECK(training.optimizer != OptimizerKind::muon, "run.cuda_graph: true needs training.optimizer: adamw; "
              "Muon's update reads its values back to the host, which a captured step cannot do");
  }
  LMF_CHECK(!data.train.empty(), "data.train: required (a token shard, a glob, or a prepared directory)");
  LMF_CHECK(training.max_steps > 0 || training.max_tokens > 0 || training.max_time > 0,
            "training: set at least one of max_steps, max_tokens, max_time");
  LMF_CHECK(training.min_lr <= training.lr, "training.min_lr (", training.min_lr,
            ") must not exceed training.lr (", training.lr, ")");
  LMF_CHECK(model.head_dim > 0 || model.n_embd % model.n_head == 0, "model.n_embd (", model.n_embd,
            ") must be divisible by model.n_head (", model.n_head, ")");
  if (model.arch == ModelArch::llama) {
    LMF_CHECK(model.n_head % (model.n_kv_head > 0 ? model.n_kv_head : model.n_head) == 0, "model.n_kv_head (",
              model.n_kv_head, ") must divide model.n_head (", model.n_head, ")");
    LMF_CHECK(model.dropout == 0.f, "model.dropout: llama models have no dropout (got ", model.dropout, ")");
  } else {
    LMF_CHECK(model.head_dim == 0 && model.n_kv_head == 0, "model.head_dim / model.n_kv_head: llama only (set model.arch: llama)");
  }
  LMF_CHECK(!(distributed.zero == 1 && distributed.backend == CommBackend::none),
            "distributed.zero: 1 needs a distributed backend (not none)");
  LMF_CHECK(!(distributed.zero == 1 && training.optimizer == OptimizerKind::muon),
            "distributed.zero: 1 shards AdamW's moments only; training.optimizer: muon needs distributed.zero: 0 "
            "(every rank runs Muon on the averaged gradients)");
}

std::string Config::to_yaml() const {
  YAML::Node root(YAML::NodeType::Map);
  for (const auto& f : fields()) {
    // Walk "a.b.c" down the tree, creating maps, and set the leaf.
    std::vector<std::string> parts;
    std::stringstream ss(f.key);
    for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
    YAML::Node node = root;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      if (!node[parts[i]]) node[parts[i]] = YAML::Node(YAML::NodeType::Map);
      node.reset(node[parts[i]]);
    }
    node[parts.back()] = f.get(*this);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

DeviceSetting DeviceSetting::parse(const std::string& text) {
  DeviceSetting d;
  if (text == "auto") return d;
  try {
    const Device device = parse_device(text);
    d.kind = device.is_cpu() ? DeviceKind::cpu : DeviceKind::cuda;
    d.index = device.is_cuda() && text != "cuda" ? device.index : -1;
    return d;
  } catch (const Error&) {
    throw Error(lmf::str("must be auto, cpu, cuda or cuda:N, got '", text, "'"));
  }
}

std::string DeviceSetting::str() const {
  if (kind == DeviceKind::cuda && index >= 0) return "cuda:" + std::to_string(index);
  return spelling(kDeviceKinds, kind);
}

std::string to_string(DeviceKind kind) { return spelling(kDeviceKinds, kind); }
std::string to_string(Precision precision) { return spelling(kPrecisions, precision); }
std::string to_string(NanPolicy policy) { return spelling(kNanPolicies, policy); }
std::string to_string(OptimizerKind kind) { return spelling(kOptimizers, kind); }
std::string to_string(LossTargets targets) { return spelling(kLossTargets, targets); }
std::string to_string(EarlyStoppingMetric metric) { return spelling(kMetrics, metric); }
std::string to_string(CommBackend backend) { return spelling(kBackends, backend); }
std::string to_string(ProgressMode mode) { return spelling(kProgressModes, mode); }

std::vector<std::string> Config::keys() {
  std::vector<std::string> out;
  for (const auto& f : fields()) out.push_back(f.key);
  return out;
}

}  // namespace lmf::train
