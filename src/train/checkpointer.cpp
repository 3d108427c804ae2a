// Checkpoints of a run directory: writing them atomically, pruning, finding the newest intact one
// and loading it. trainer_state.json is validated against its directory on every read, so a
// damaged newest checkpoint is reported with the name of the newest intact one to use instead.
#include "lmforge/train/checkpointer.h"

#include "io/untrusted_json.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/nn/causal_lm.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/optim/muon.h"
#include "train/model_io.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lmf::train {
namespace {

constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kStateFile = "trainer_state.json";
const std::string kMuonPrefix = "muon_momentum.";
constexpr const char* kTokenizerFile = "tokenizer.json";
constexpr int kStateVersion = 1;
// Steps, positions and counts beyond 2^53 are not ours: no run gets there, and a double (JSON's
// number) no longer holds them exactly.
constexpr int64_t kMaxCount = int64_t(1) << 53;
// The spike window is 50 losses; a longer list is damage.
constexpr std::size_t kMaxRecentLosses = 1000;
constexpr std::uintmax_t kMaxStateBytes = 64u << 20;

// step_XXXXXXXX: the step it names, or -1 for any other name.
int64_t step_of_dir_name(const std::string& name) {
  if (name.size() != 13 || name.rfind("step_", 0) != 0 ||
      name.find_first_not_of("0123456789", 5) != std::string::npos)
    return -1;
  return std::stoll(name.substr(5));
}

int64_t count_in(const json& j, const char* key, int64_t low, int64_t high) {
  const json& v = j.at(key);
  LMF_CHECK(v.is_number_integer(), key, ": expected an integer, got ", v.type_name());
  const int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v.get<int64_t>();
  LMF_CHECK(x >= low && x <= high, key, ": ", x, " is out of range [", low, ", ", high, "]");
  return x;
}

std::string read_text(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  LMF_CHECK(!ec, "cannot read (", ec.message(), ")");
  LMF_CHECK(size <= kMaxStateBytes, "is ", size, " bytes, more than a trainer state can be");
  std::ifstream in(path, std::ios::binary);
  LMF_CHECK(in, "cannot read");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string TrainState::to_json() const {
  const json j{{"version", kStateVersion},
               {"step", step},
               {"elapsed_s", elapsed_s},
               {"dropout_rng", {{"seed", dropout_rng.seed}, {"offset", dropout_rng.offset}}},
               {"loader", {{"epoch", loader.epoch}, {"shard", loader.shard}, {"offset", loader.offset}}},
               {"best_val_loss", std::isnan(best_val_loss) ? json(nullptr) : json(best_val_loss)},
               {"best_step", best_step},
               {"evals_without_improvement", evals_without_improvement},
               {"recent_losses", recent_losses},
               {"config", config_yaml}};
  return j.dump(2) + "\n";
}

TrainState TrainState::from_json(const std::string& text, const std::string& source) {
  TrainState s;
  // Each field's type errors name the field (JSON's own message does not).
  const auto named = [](const char* key, const auto& read) {
    try {
      read();
    } catch (const json::exception& e) {
      throw Error(str(key, ": ", e.what()));
    }
  };
  try {
    json j;
    try {
      j = io::parse_untrusted_json(text, "trainer state");
    } catch (const Error& e) {
      throw Error(str("not valid JSON (", e.what(), ")"));
    }
    LMF_CHECK(j.is_object(), "expected a JSON object");
    LMF_CHECK(j.value("version", json(0)) == json(kStateVersion), "unsupported version");
    LMF_CHECK(j.contains("step"), "step: missing");
    s.step = count_in(j, "step", 0, kMaxCount);
    named("elapsed_s", [&] { s.elapsed_s = j.at("elapsed_s").get<double>(); });
    LMF_CHECK(std::isfinite(s.elapsed_s) && s.elapsed_s >= 0, "elapsed_s: ", s.elapsed_s, " is not a duration");
    named("dropout_rng", [&] {
      const json& rng = j.at("dropout_rng");
      s.dropout_rng = {rng.at("seed").get<uint64_t>(), rng.at("offset").get<uint64_t>()};
    });
    named("loader", [&] {
      const json& loader = j.at("loader");
      s.loader = {count_in(loader, "epoch", 0, kMaxCount), count_in(loader, "shard", 0, kMaxCount),
                  count_in(loader, "offset", 0, kMaxCount)};
    });
    named("best_val_loss", [&] {
      const json& best = j.at("best_val_loss");
      s.best_val_loss = best.is_null() ? std::numeric_limits<float>::quiet_NaN() : best.get<float>();
    });
    LMF_CHECK(j.at("best_val_loss").is_null() || std::isfinite(s.best_val_loss), "best_val_loss: not a finite number");
    named("best_step", [&] { s.best_step = count_in(j, "best_step", -1, s.step); });
    LMF_CHECK(std::isnan(s.best_val_loss) == (s.best_step < 0), "best_val_loss and best_step disagree");
    named("evals_without_improvement",
          [&] { s.evals_without_improvement = count_in(j, "evals_without_improvement", 0, s.step); });
    named("recent_losses", [&] { s.recent_losses = j.at("recent_losses").get<std::vector<float>>(); });
    LMF_CHECK(s.recent_losses.size() <= kMaxRecentLosses, "recent_losses: ", s.recent_losses.size(),
              " entries, more than the spike window holds");
    for (float l : s.recent_losses) LMF_CHECK(std::isfinite(l), "recent_losses: holds a non-finite loss");
    named("config", [&] { s.config_yaml = j.value("config", std::string()); });
  } catch (const json::exception& e) {
    throw Error(str(source, ": ", e.what()));
  } catch (const Error& e) {
    throw Error(str(source, ": ", e.what()));
  }
  return s;
}

Checkpointer::Checkpointer(fs::path run_dir, int64_t keep_last) : run_dir_(std::move(run_dir)), keep_last_(keep_last) {
  LMF_CHECK(keep_last_ >= 1, "checkpoint.keep_last: must be >= 1, got ", keep_last_);
}

fs::path Checkpointer::step_dir(int64_t step) const {
  return run_dir_ / "checkpoints" / fmt::format("step_{:08d}", step);
}

void Checkpointer::write(const fs::path& target, const nn::CausalLM& model, const io::NamedTensors& moments,
                         int64_t optimizer_steps, const TrainState& state, const data::Tokenizer* tokenizer) const {
  io::AtomicDir dir(target);
  detail::write_model(model, dir.path());
  io::write_safetensors(dir.path() / kOptimizerFile, moments, {{"step", std::to_string(optimizer_steps)}});
  io::write_file_atomic(dir.path() / kStateFile, state.to_json());
  if (tokenizer) tokenizer->save((dir.path() / kTokenizerFile).string());
  dir.commit();
}

fs::path Checkpointer::save(const nn::CausalLM& model, const io::NamedTensors& moments, int64_t optimizer_steps,
                            const TrainState& state, const data::Tokenizer* tokenizer) const {
  const fs::path dir = step_dir(state.step);
  write(dir, model, moments, optimizer_steps, state, tokenizer);
  prune();
  return dir;
}

std::vector<fs::path> Checkpointer::list() const {
  std::vector<fs::path> out;
  const fs::path root = run_dir_ / "checkpoints";
  if (!fs::is_directory(root)) return out;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory() && step_of_dir_name(entry.path().filename().string()) >= 0 &&
        fs::exists(entry.path() / kStateFile))
      out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void Checkpointer::prune() const {
  auto all = list();
  const auto keep = static_cast<std::size_t>(keep_last_);
  for (std::size_t i = 0; i + keep < all.size(); ++i) {
    // Renamed first: a kill during remove_all must not leave a half-deleted step_ directory that
    // still has its trainer_state.json and so looks complete. The aside name is never listed.
    fs::path aside = all[i];
    aside += ".deleting";
    fs::remove_all(aside);  // left by an earlier run that was killed here
    fs::rename(all[i], aside);
    fs::remove_all(aside);
  }
}

TrainState Checkpointer::read_state(const fs::path& dir) {
  const fs::path path = dir / kStateFile;
  std::string text;
  try {
    text = read_text(path);
  } catch (const Error& e) {
    throw Error(str(path.string(), ": ", e.what()));
  }
  TrainState state = TrainState::from_json(text, path.string());
  const int64_t named = step_of_dir_name(dir.filename().string());
  LMF_CHECK(named < 0 || named == state.step, path.string(), ": step ", state.step, " does not match its directory ",
            dir.filename().string());
  return state;
}

fs::path Checkpointer::newest_intact(const fs::path& before) const {
  const auto all = list();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (!before.empty() && it->filename() >= before.filename()) continue;
    try {
      read_state(*it);
    } catch (const Error&) {
      continue;
    }
    if (fs::exists(*it / io::kConfigFile) && fs::exists(*it / io::kModelFile) && fs::exists(*it / kOptimizerFile))
      return *it;
  }
  return {};
}

void Checkpointer::remove_leftovers() const {
  for (const fs::path& dir : {run_dir_, run_dir_ / "checkpoints"}) {
    if (!fs::is_directory(dir)) continue;
    std::vector<fs::path> stale;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      const bool ours = name.rfind("step_", 0) == 0 || name.rfind("best.", 0) == 0 || name.rfind("final.", 0) == 0;
      if (entry.is_directory() && ours && (name.find(".tmp-") != std::string::npos || name.ends_with(".deleting")))
        stale.push_back(entry.path());
    }
    for (const auto& path : stale) fs::remove_all(path);
  }
}

bool Checkpointer::has_previous_run() const {
  const fs::path checkpoints = run_dir_ / "checkpoints";
  if (fs::is_directory(checkpoints) && !fs::is_empty(checkpoints)) return true;
  if (fs::exists(run_dir_ / "best") || fs::exists(run_dir_ / "final")) return true;
  const fs::path metrics = run_dir_ / "metrics.jsonl";
  std::error_code ec;
  return fs::is_regular_file(metrics) && fs::file_size(metrics, ec) > 0 && !ec;
}

fs::path Checkpointer::set_aside_previous_run() const {
  fs::path dir = fs::absolute(run_dir_).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm local{};
  localtime_r(&now, &local);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &local);
  fs::path aside;
  for (int n = 0;; ++n) {
    aside = dir.parent_path() / (dir.filename().string() + ".previous-" + stamp + (n ? fmt::format("-{}", n) : ""));
    std::error_code ec;
    if (fs::create_directory(aside, ec)) break;  // false: the name exists; never reuse it
    LMF_CHECK(!ec, "cannot create ", aside.string(), " to set the earlier run aside (", ec.message(), ")");
  }
  for (const char* name : {"checkpoints", "best", "final", "metrics.jsonl", "config.yaml"}) {
    const fs::path from = run_dir_ / name;
    if (!fs::exists(fs::symlink_status(from))) continue;
    std::error_code ec;
    fs::rename(from, aside / name, ec);
    LMF_CHECK(!ec, "cannot move ", from.string(), " to ", (aside / name).string(), " (", ec.message(), ")");
  }
  return aside;
}

io::NamedTensors muon_moments(const optim::Muon& muon) {
  io::NamedTensors out;
  for (auto& [name, t] : muon.state().momentum) out.emplace_back(kMuonPrefix + name, t);
  return out;
}

TrainState Checkpointer::load(const fs::path& dir, nn::CausalLM& model, optim::AdamW& optimizer, optim::Muon* muon) {
  TrainState state;
  try {
    state = read_state(dir);
  } catch (const Error& e) {
    throw Error(str("resume: ", e.what()));
  }
  detail::load_weights(model, dir);
  const fs::path optimizer_path = dir / kOptimizerFile;
  const auto file = io::read_safetensors(optimizer_path);
  optim::AdamW::State os;
  const std::string steps = file.metadata.count("step") ? file.metadata.at("step") : "0";
  const auto [end, ec] = std::from_chars(steps.data(), steps.data() + steps.size(), os.step);
  LMF_CHECK(ec == std::errc() && end == steps.data() + steps.size() && os.step >= 0 && os.step <= state.step,
            "resume: ", optimizer_path.string(), ": __metadata__ step '", steps.substr(0, 40), "' is not a step count in [0, ",
            state.step, "]");
  for (const auto& [name, param] : model.named_parameters()) {
    const auto m = file.tensors.find("exp_avg." + name), v = file.tensors.find("exp_avg_sq." + name);
    LMF_CHECK(m != file.tensors.end() && v != file.tensors.end(), "resume: ", optimizer_path.string(), " has no moments for ", name);
    os.exp_avg.emplace_back(name, m->second);
    os.exp_avg_sq.emplace_back(name, v->second);
  }
  optimizer.load_state(os);
  if (muon) {
    optim::Muon::State ms;
    ms.step = os.step;
    for (const auto& name : muon->names()) {
      const auto it = file.tensors.find(kMuonPrefix + name);
      LMF_CHECK(it != file.tensors.end(), "resume: ", optimizer_path.string(), " has no Muon momentum for ", name,
                " (was it trained with training.optimizer: adamw?)");
      ms.momentum.emplace_back(name, it->second);
    }
    muon->load_state(ms);
  } else {
    for (const auto& [key, t] : file.tensors)
      LMF_CHECK(key.rfind(kMuonPrefix, 0) != 0, "resume: ", optimizer_path.string(),
                " holds Muon momentum buffers (trained with training.optimizer: muon); set training.optimizer: muon "
                "to resume it");
  }
  model.dropout_generator().set_state(state.dropout_rng);
  return state;
}

}  // namespace lmf::train
