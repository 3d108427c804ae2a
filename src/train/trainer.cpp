// The training loop. Everything a run needs is resolved and checked in the constructor, so a bad
// config fails before any work. The loop itself: micro-batches with gradient accumulation, NaN and
// spike guards, clipping, the lr schedule, AdamW, periodic evaluation on fixed validation batches,
// early stopping, atomic checkpoints, and exact resume (weights, moments, RNG, loader position).
#include "lmforge/train/trainer.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lmforge/data/loader.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/optim/clip.h"
#include "lmforge/optim/schedule.h"
#include "train/progress.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lmf::train {
namespace {

std::atomic<bool> g_stop_requested{false};
extern "C" void on_stop_signal(int) { g_stop_requested.store(true); }

constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kTokenizerFile = "tokenizer.json";
constexpr int kStateVersion = 1;
constexpr std::size_t kSpikeWindow = 50, kSpikeWarmup = 20;

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

// True when `name` matches `pattern`, where '*' matches any run of characters.
bool glob_match(const std::string& pattern, const std::string& name) {
  std::size_t p = 0, n = 0, star = std::string::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == name[n] || pattern[p] == '?')) {
      ++p, ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++, mark = n;
    } else if (star != std::string::npos) {
      p = star + 1, n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// data.train may name a prepared directory (train.bin, val.bin, tokenizer.json inside).
struct DataPaths {
  std::string train, val, tokenizer;
};

DataPaths resolve_data(const DataConfig& data) {
  DataPaths out{data.train, data.val, data.tokenizer};
  if (fs::is_directory(data.train) && fs::exists(fs::path(data.train) / "train.bin")) {
    const fs::path dir(data.train);
    out.train = (dir / "train.bin").string();
    if (out.val.empty() && fs::exists(dir / "val.bin")) out.val = (dir / "val.bin").string();
    if (out.tokenizer.empty() && fs::exists(dir / kTokenizerFile)) out.tokenizer = (dir / kTokenizerFile).string();
  } else if (out.tokenizer.empty()) {
    const fs::path sibling = fs::path(data.train).parent_path() / kTokenizerFile;
    if (fs::exists(sibling)) out.tokenizer = sibling.string();
  }
  return out;
}

bool looks_like_checkpoint(const fs::path& dir) {
  return fs::is_directory(dir) && fs::exists(dir / io::kConfigFile);
}

}  // namespace

struct Trainer::Impl {
  Config config;
  Callbacks callbacks;
  DataPaths paths;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<nn::GPT> model;
  std::unique_ptr<optim::AdamW> optimizer;
  std::unique_ptr<data::DataLoader> train_loader;
  std::unique_ptr<data::DataLoader> val_loader;
  optim::LrSchedule schedule;
  int64_t block_size = 0;
  int64_t tokens_per_step = 0;
  int64_t total_steps = 0;  // 0: bounded by max_time only

  // Run state (saved in trainer_state.json).
  int64_t step = 0;
  double elapsed_before = 0;  // wall time of earlier sessions of this run
  float best_val = std::numeric_limits<float>::quiet_NaN();
  int64_t best_step = -1;
  int64_t evals_without_improvement = 0;
  std::deque<float> recent_losses;  // spike guard window
  std::string last_checkpoint;

  fs::path out_dir;
  std::ofstream metrics;

  // --- set-up ------------------------------------------------------------------------------

  void setup(std::unique_ptr<nn::GPT> given) {
    if (config.run.threads > 0) omp_set_num_threads(config.run.threads);
    check_device();
    paths = resolve_data(config.data);
    check_paths();
    if (!paths.tokenizer.empty()) {
      try {
        tokenizer = data::load_tokenizer(paths.tokenizer);
      } catch (const Error& e) {
        throw Error(str("data.tokenizer: ", e.what()));
      }
    }
    model = given ? std::move(given) : build_model();
    const auto& mc = model->config();
    if (tokenizer)
      LMF_CHECK(tokenizer->vocab_size() <= mc.vocab_size, "vocabulary mismatch: tokenizer '",
                paths.tokenizer, "' has ", tokenizer->vocab_size(), " tokens but the model has ",
                mc.vocab_size, " (model.vocab_size / model.init)");
    block_size = config.model.block_size;
    LMF_CHECK(block_size <= mc.block_size, "model.block_size ", block_size,
              " exceeds the model's ", mc.block_size, " positions (", config.model.init, ")");
    apply_freeze();
    tokens_per_step = config.training.batch_size * block_size * config.training.grad_accum_steps;
    total_steps = config.training.max_steps;
    if (config.training.max_tokens > 0) {
      const int64_t by_tokens = (config.training.max_tokens + tokens_per_step - 1) / tokens_per_step;
      total_steps = total_steps > 0 ? std::min(total_steps, by_tokens) : by_tokens;
    }
    LMF_CHECK(total_steps > 0 || config.training.schedule == "constant",
              "training.schedule: cosine needs max_steps or max_tokens to know where decay ends");
    make_loaders();
    make_optimizer();
    out_dir = config.run.out_dir;
  }

  void check_device() {
    if (config.run.device == "auto" || config.run.device == "cpu") {
      LMF_CHECK(config.run.precision == "fp32", "run.precision: bf16 needs a CUDA device (run.device: cuda)");
      return;
    }
    const Device device = parse_device(config.run.device);
    LMF_CHECK(cuda_available(), "run.device: ", config.run.device, " requested but no CUDA GPU is available",
#ifdef LMF_WITH_CUDA
              " on this machine"
#else
              " (this build has no CUDA support)"
#endif
    );
    throw Error(str("run.device: ", device.str(), ": training on CUDA is not available in this version; use cpu"));
  }

  void check_paths() {
    LMF_CHECK(!data::expand_shard_paths(paths.train).empty(), "data.train: no token shards match '",
              config.data.train, "'");
    if (!paths.val.empty())
      LMF_CHECK(!data::expand_shard_paths(paths.val).empty(), "data.val: no token shards match '", paths.val, "'");
    if (config.model.init != "scratch")
      LMF_CHECK(looks_like_checkpoint(config.model.init), "model.init: '", config.model.init,
                "' is neither 'scratch' nor a checkpoint directory with config.json");
    if (config.checkpoint.resume != "auto" && config.checkpoint.resume != "never")
      LMF_CHECK(fs::exists(fs::path(config.checkpoint.resume) / kStateFile), "checkpoint.resume: '",
                config.checkpoint.resume, "' is not a checkpoint directory (no ", kStateFile, ")");
  }

  std::unique_ptr<nn::GPT> build_model() {
    const ModelConfig& m = config.model;
    if (m.init != "scratch") {
      auto loaded = io::load_gpt(m.init, config.run.seed);
      if (m.vocab_size > 0)
        LMF_CHECK(m.vocab_size == loaded->config().vocab_size, "model.vocab_size ", m.vocab_size,
                  " differs from the checkpoint's ", loaded->config().vocab_size, " (", m.init, ")");
      return loaded;
    }
    nn::GPTConfig gc;
    gc.n_layer = m.n_layer;
    gc.n_head = m.n_head;
    gc.n_embd = m.n_embd;
    gc.block_size = m.block_size;
    gc.dropout = m.dropout;
    gc.bias = m.bias;
    gc.vocab_size = m.vocab_size > 0 ? m.vocab_size : (tokenizer ? tokenizer->vocab_size() : 0);
    LMF_CHECK(gc.vocab_size > 0, "model.vocab_size: not set and no tokenizer found (set data.tokenizer)");
    return std::make_unique<nn::GPT>(gc, config.run.seed);
  }

  void apply_freeze() {
    for (const auto& pattern : config.finetune.freeze) {
      int64_t matched = 0;
      for (auto& [name, param] : model->named_parameters()) {
        if (glob_match(pattern, name) || name.rfind(pattern + ".", 0) == 0) {
          param.set_requires_grad(false);
          ++matched;
        }
      }
      LMF_CHECK(matched > 0, "finetune.freeze: pattern '", pattern, "' matches no parameter");
    }
  }

  void make_loaders() {
    data::LoaderOptions options;
    options.batch_size = config.training.batch_size;
    options.block_size = block_size;
    options.order = data::parse_loader_order(config.data.order);
    options.seed = config.run.seed;
    options.vocab_size = tokenizer ? tokenizer->vocab_size() : model->config().vocab_size;
    train_loader = std::make_unique<data::DataLoader>(paths.train, options);
    if (!paths.val.empty()) {
      options.order = data::LoaderOrder::sequential;  // fixed batches: comparable across evaluations
      val_loader = std::make_unique<data::DataLoader>(paths.val, options);
    }
  }

  void make_optimizer() {
    optim::AdamWConfig oc;
    oc.lr = config.training.lr;
    oc.beta1 = config.training.betas[0];
    oc.beta2 = config.training.betas[1];
    oc.eps = config.training.eps;
    oc.weight_decay = config.training.weight_decay;
    optimizer = std::make_unique<optim::AdamW>(*model, oc);
    schedule.kind = config.training.schedule == "cosine" ? optim::ScheduleKind::cosine : optim::ScheduleKind::constant;
    schedule.lr = config.training.lr;
    schedule.min_lr = config.training.min_lr;
    schedule.warmup_iters = config.training.warmup_steps;
    schedule.decay_iters = std::max<int64_t>(total_steps, config.training.warmup_steps + 1);
    schedule.validate();
  }

  // --- checkpoints -------------------------------------------------------------------------

  json state_json() const {
    const auto rng = model->dropout_generator().state();
    const auto pos = train_loader->position();
    return json{{"version", kStateVersion},
                {"step", step},
                {"elapsed_s", elapsed()},
                {"dropout_rng", {{"seed", rng.seed}, {"offset", rng.offset}}},
                {"loader", {{"epoch", pos.epoch}, {"shard", pos.shard}, {"offset", pos.offset}}},
                {"best_val_loss", std::isnan(best_val) ? json(nullptr) : json(best_val)},
                {"best_step", best_step},
                {"evals_without_improvement", evals_without_improvement},
                {"recent_losses", std::vector<float>(recent_losses.begin(), recent_losses.end())},
                {"config", config.to_yaml()}};
  }

  void write_checkpoint(const fs::path& target) {
    io::AtomicDir dir(target);
    io::write_model_files(*model, dir.path());
    const auto state = optimizer->state();
    io::NamedTensors moments;
    for (const auto& [name, t] : state.exp_avg) moments.emplace_back("exp_avg." + name, t);
    for (const auto& [name, t] : state.exp_avg_sq) moments.emplace_back("exp_avg_sq." + name, t);
    io::write_safetensors(dir.path() / kOptimizerFile, moments, {{"step", std::to_string(state.step)}});
    io::write_file_atomic(dir.path() / kStateFile, state_json().dump(2) + "\n");
    if (tokenizer) tokenizer->save((dir.path() / kTokenizerFile).string());
    dir.commit();
  }

  void save_periodic() {
    const fs::path dir = out_dir / "checkpoints" / step_dir_name(step);
    write_checkpoint(dir);
    last_checkpoint = dir.string();
    event("checkpoint", dir.string());
    prune_checkpoints();
  }

  std::vector<fs::path> complete_checkpoints() const {
    std::vector<fs::path> out;
    const fs::path root = out_dir / "checkpoints";
    if (!fs::is_directory(root)) return out;
    for (const auto& entry : fs::directory_iterator(root)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_directory() && name.size() == 13 && name.rfind("step_", 0) == 0 &&
          name.find_first_not_of("0123456789", 5) == std::string::npos && fs::exists(entry.path() / kStateFile))
        out.push_back(entry.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  void prune_checkpoints() {
    auto all = complete_checkpoints();
    const auto keep = static_cast<std::size_t>(config.checkpoint.keep_last);
    for (std::size_t i = 0; i + keep < all.size(); ++i) fs::remove_all(all[i]);
  }

  void load_checkpoint(const fs::path& dir) {
    const fs::path state_path = dir / kStateFile;
    json state;
    try {
      std::ifstream in(state_path);
      LMF_CHECK(in, "cannot read");
      state = json::parse(in);
      LMF_CHECK(state.value("version", 0) == kStateVersion, "unsupported version");
    } catch (const std::exception& e) {
      throw Error(str("resume: ", state_path.string(), ": ", e.what()));
    }
    auto loaded = io::load_gpt(dir);
    LMF_CHECK(loaded->config().n_layer == model->config().n_layer && loaded->config().n_embd == model->config().n_embd &&
                  loaded->config().vocab_size == model->config().vocab_size,
              "resume: ", dir.string(), " holds a model of a different shape than this config");
    model->load_state_dict(loaded->state_dict());
    const auto file = io::read_safetensors(dir / kOptimizerFile);
    optim::AdamW::State os;
    os.step = std::stoll(file.metadata.count("step") ? file.metadata.at("step") : "0");
    for (const auto& [name, param] : model->named_parameters()) {
      const auto m = file.tensors.find("exp_avg." + name), v = file.tensors.find("exp_avg_sq." + name);
      LMF_CHECK(m != file.tensors.end() && v != file.tensors.end(), "resume: ",
                (dir / kOptimizerFile).string(), " has no moments for ", name);
      os.exp_avg.emplace_back(name, m->second);
      os.exp_avg_sq.emplace_back(name, v->second);
    }
    optimizer->load_state(os);
    try {
      step = state.at("step").get<int64_t>();
      elapsed_before = state.at("elapsed_s").get<double>();
      model->dropout_generator().set_state({state.at("dropout_rng").at("seed").get<uint64_t>(),
                                            state.at("dropout_rng").at("offset").get<uint64_t>()});
      train_loader->set_position({state.at("loader").at("epoch").get<int64_t>(),
                                  state.at("loader").at("shard").get<int64_t>(),
                                  state.at("loader").at("offset").get<int64_t>()});
      best_val = state.at("best_val_loss").is_null() ? std::numeric_limits<float>::quiet_NaN()
                                                     : state.at("best_val_loss").get<float>();
      best_step = state.at("best_step").get<int64_t>();
      evals_without_improvement = state.at("evals_without_improvement").get<int64_t>();
      const auto losses = state.at("recent_losses").get<std::vector<float>>();
      recent_losses.assign(losses.begin(), losses.end());
    } catch (const json::exception& e) {
      throw Error(str("resume: ", state_path.string(), ": ", e.what()));
    }
    last_checkpoint = dir.string();
  }

  // --- metrics -----------------------------------------------------------------------------

  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  double elapsed() const {
    return elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }

  void open_metrics(bool resumed) {
    const fs::path path = out_dir / "metrics.jsonl";
    std::vector<std::string> kept;
    if (resumed && fs::exists(path)) {
      // Entries past the resumed step came from work that was lost; drop them.
      std::ifstream in(path);
      for (std::string line; std::getline(in, line);) {
        const json j = json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.value("step", int64_t(0)) <= step) kept.push_back(line);
      }
    }
    metrics.open(path, std::ios::trunc);
    LMF_CHECK(metrics, "cannot write ", path.string());
    for (const auto& line : kept) metrics << line << '\n';
    metrics.flush();
  }

  void log_json(const json& j) {
    metrics << j.dump() << '\n';
    metrics.flush();
  }

  Progress* progress = nullptr;
  void event(const std::string& name, const std::string& detail) {
    log_json({{"step", step}, {"event", name}, {"detail", detail}, {"elapsed_s", elapsed()}});
    if (progress) progress->message(fmt::format("step {} | {}: {}", step, name, detail));
    if (callbacks.on_event) callbacks.on_event(name, detail);
  }

  // --- evaluation --------------------------------------------------------------------------

  float evaluate() {
    LMF_CHECK(val_loader, "evaluate: no validation data (data.val)");
    NoGradGuard no_grad;
    model->eval();
    val_loader->reset();
    const int64_t batches = std::min<int64_t>(config.eval.batches, std::max<int64_t>(1, val_loader->batches_per_epoch()));
    double total = 0;
    for (int64_t i = 0; i < batches; ++i) {
      const auto batch = val_loader->next();
      total += model->forward(batch.inputs, batch.targets).loss.item();
    }
    model->train();
    return static_cast<float>(total / batches);
  }

  // Returns true when early stopping says to stop.
  bool run_evaluation() {
    const float val = evaluate();
    const bool improved = std::isnan(best_val) || val < best_val - config.early_stopping.min_delta;
    log_json({{"step", step}, {"val_loss", val}, {"elapsed_s", elapsed()}});
    if (progress) progress->message(fmt::format("step {} | val_loss {:.4f}{}", step, val, improved ? " (best)" : ""));
    if (callbacks.on_eval) callbacks.on_eval(step, val);
    if (improved) {
      best_val = val;
      best_step = step;
      evals_without_improvement = 0;
      write_checkpoint(out_dir / "best");
    } else {
      ++evals_without_improvement;
    }
    return config.early_stopping.enabled && evals_without_improvement >= config.early_stopping.patience;
  }

  // --- the loop ----------------------------------------------------------------------------

  bool spike(float loss) const {
    if (config.training.spike_zscore <= 0 || recent_losses.size() < kSpikeWarmup) return false;
    double mean = 0, var = 0;
    for (float l : recent_losses) mean += l;
    mean /= recent_losses.size();
    for (float l : recent_losses) var += (l - mean) * (l - mean);
    const double sd = std::sqrt(var / recent_losses.size());
    return sd > 0 && (loss - mean) / sd > config.training.spike_zscore;
  }

  TrainResult fit() {
    fs::create_directories(out_dir);
    bool resumed = false;
    if (config.checkpoint.resume == "auto") {
      const auto all = complete_checkpoints();
      if (!all.empty()) load_checkpoint(all.back()), resumed = true;
    } else if (config.checkpoint.resume != "never") {
      load_checkpoint(config.checkpoint.resume), resumed = true;
    }
    io::write_file_atomic(out_dir / "config.yaml", config.to_yaml());
    open_metrics(resumed);
    Progress bar(config.logging.progress, total_steps);
    progress = &bar;
    if (resumed) event("resume", last_checkpoint);
    started = std::chrono::steady_clock::now();

    TrainResult result;
    const auto& t = config.training;
    const float inv_accum = 1.0f / static_cast<float>(t.grad_accum_steps);
    int64_t tokens_since_log = 0;
    auto log_clock = std::chrono::steady_clock::now();
    model->train();
    while (true) {
      if (total_steps > 0 && step >= total_steps) {
        result.stop_reason = t.max_steps > 0 && step >= t.max_steps ? "max_steps" : "max_tokens";
        break;
      }
      if (t.max_time > 0 && elapsed() >= t.max_time) {
        result.stop_reason = "max_time";
        break;
      }
      const float lr = static_cast<float>(schedule.lr_at(step));
      model->zero_grad();
      double loss_sum = 0;
      for (int64_t micro = 0; micro < t.grad_accum_steps; ++micro) {
        const auto batch = train_loader->next();
        Tensor loss = model->forward(batch.inputs, batch.targets).loss;
        loss_sum += loss.item();
        scale(loss, inv_accum).backward();
      }
      const float loss = static_cast<float>(loss_sum * inv_accum);
      bool skipped = false;
      double norm = 0;
      if (!std::isfinite(loss)) {
        if (t.on_nan == "stop") {
          throw Error(str("step ", step + 1, ": training loss is ", loss, "; stopping. Last good checkpoint: ",
                          last_checkpoint.empty() ? "none (no checkpoint written yet)" : last_checkpoint));
        }
        skipped = true;
        event("skip", fmt::format("non-finite loss {}", loss));
      } else if (spike(loss)) {
        skipped = true;
        event("skip", fmt::format("loss spike {:.4f}", loss));
      } else {
        norm = t.grad_clip > 0 ? optim::clip_grad_norm(*model->slab(), t.grad_clip) : optim::grad_norm(*model->slab());
        if (!std::isfinite(norm)) {
          LMF_CHECK(t.on_nan == "skip", "step ", step + 1, ": gradient norm is ", norm, "; stopping. Last good checkpoint: ",
                    last_checkpoint.empty() ? "none" : last_checkpoint);
          skipped = true;
          event("skip", "non-finite gradient norm");
        }
      }
      if (!skipped) {
        optimizer->set_lr(lr);
        optimizer->step();
        recent_losses.push_back(loss);
        if (recent_losses.size() > kSpikeWindow) recent_losses.pop_front();
      }
      ++step;
      tokens_since_log += tokens_per_step;
      result.last_train_loss = loss;

      bool stop = false;
      if (step % config.logging.interval == 0 || step == total_steps) {
        const auto now = std::chrono::steady_clock::now();
        const double dt = std::chrono::duration<double>(now - log_clock).count();
        StepMetrics m{step, loss, lr, norm, dt > 0 ? tokens_since_log / dt : 0.0, elapsed(), skipped};
        log_clock = now;
        tokens_since_log = 0;
        log_json({{"step", m.step}, {"train_loss", m.train_loss}, {"lr", m.lr}, {"grad_norm", m.grad_norm},
                  {"tokens_per_sec", m.tokens_per_sec}, {"elapsed_s", m.elapsed_s}});
        const double eta = total_steps > 0 && m.tokens_per_sec > 0
                               ? double(total_steps - step) * tokens_per_step / m.tokens_per_sec
                               : std::numeric_limits<double>::quiet_NaN();
        bar.step(step, loss, lr, norm, m.tokens_per_sec, m.elapsed_s, eta);
        if (callbacks.on_step && !callbacks.on_step(m)) stop = true, result.stop_reason = "callback";
      } else if (callbacks.on_step) {
        StepMetrics m{step, loss, lr, norm, 0.0, elapsed(), skipped};
        if (!callbacks.on_step(m)) stop = true, result.stop_reason = "callback";
      }
      if (val_loader && config.eval.interval > 0 && step % config.eval.interval == 0) {
        if (run_evaluation()) {
          event("early_stop", fmt::format("no improvement in {} evaluations; best val_loss {:.4f} at step {}",
                                          evals_without_improvement, best_val, best_step));
          stop = true;
          result.stop_reason = "early_stop";
        }
      }
      if (config.checkpoint.interval > 0 && step % config.checkpoint.interval == 0) save_periodic();
      if (g_stop_requested.load()) {
        result.stop_reason = "signal";
        stop = true;
      }
      if (stop) break;
    }
    if (val_loader && result.stop_reason != "signal" && result.stop_reason != "early_stop" &&
        (config.eval.interval == 0 || step % config.eval.interval != 0))
      run_evaluation();
    // A checkpoint of the last step, so resume: auto finds the run complete (or continues it).
    if (complete_checkpoints().empty() || complete_checkpoints().back().filename() != step_dir_name(step)) save_periodic();
    if (result.stop_reason == "signal") event("interrupted", "stopped by signal after saving " + last_checkpoint);
    if (result.stop_reason == "early_stop" && config.early_stopping.restore_best && best_step >= 0) {
      model->load_state_dict(io::load_gpt(out_dir / "best")->state_dict());
      event("restore_best", fmt::format("weights of step {} (val_loss {:.4f})", best_step, best_val));
    }
    write_checkpoint(out_dir / "final");
    event("final", (out_dir / "final").string());
    progress = nullptr;
    result.steps = step;
    result.best_val_loss = best_val;
    result.best_step = best_step;
    return result;
  }
};

Trainer::Trainer(Config config, Callbacks callbacks) : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
  impl_->callbacks = std::move(callbacks);
  impl_->setup(nullptr);
}

Trainer::Trainer(Config config, std::unique_ptr<nn::GPT> model, Callbacks callbacks)
    : impl_(std::make_unique<Impl>()) {
  LMF_CHECK(model, "Trainer: null model");
  LMF_CHECK(config.model.init == "scratch", "Trainer: a caller-built model needs model.init: scratch");
  impl_->config = std::move(config);
  impl_->callbacks = std::move(callbacks);
  impl_->setup(std::move(model));
}

Trainer::~Trainer() = default;
TrainResult Trainer::fit() { return impl_->fit(); }
float Trainer::evaluate() { return impl_->evaluate(); }
nn::GPT& Trainer::model() { return *impl_->model; }
const Config& Trainer::config() const { return impl_->config; }

void Trainer::install_signal_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

}  // namespace lmf::train
