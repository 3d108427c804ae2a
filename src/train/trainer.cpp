// The training loop. Everything a run needs is resolved and checked in the constructor, so a bad
// config fails before any work. fit() composes the public parts (RunLock, Checkpointer, RunLog,
// DataParallel, LossGuard, EarlyStopping): micro-batches with gradient accumulation, the guards,
// clipping, the lr schedule, AdamW, periodic evaluation on fixed validation batches, atomic
// checkpoints, and exact resume (weights, moments, RNG, loader position). On a GPU a step keeps its
// loss, norm and guard verdicts on the device (optim::DeviceStep) and the host reads them only at a
// log line, an evaluation or a checkpoint; the CPU decides on the host every step. With
// run.cuda_graph that GPU step, from zero_grad to the update, is captured once after a few eager
// warm-up steps and replayed, its batch copied into static device tensors before each replay.
#include "lmforge/train/trainer.h"

#include "lmforge/core/cuda_graph.h"
#include "lmforge/core/device_peak.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lmforge/data/loader.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/dist/comm.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/optim/device_step.h"
#include "lmforge/optim/muon.h"
#include "lmforge/optim/schedule.h"
#include "lmforge/train/checkpointer.h"
#include "lmforge/train/data_parallel.h"
#include "lmforge/train/guards.h"
#include "lmforge/train/run_lock.h"
#include "train/batch_upload.h"
#include "train/model_io.h"
#include "train/task_metrics.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lmf::train {
namespace {

// The CPU's GEMM rate with the current thread count and product precision (f32, or bf16 products),
// measured (~0.05 s) once per process and setting: every later trainer in the process reuses it.
double measured_cpu_gflops() {
  static std::mutex mutex;
  static std::map<std::pair<int, bool>, double> by_setting;
  const std::lock_guard<std::mutex> lock(mutex);
  const std::pair<int, bool> key{omp_get_max_threads(), compute_options().cpu_matmul_bf16};
  const auto it = by_setting.find(key);
  return it != by_setting.end() ? it->second : by_setting[key] = cpu_gemm_gflops();
}

std::atomic<bool> g_stop_requested{false};
extern "C" void on_stop_signal(int) { g_stop_requested.store(true); }

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kTokenizerFile = "tokenizer.json";
constexpr std::size_t kSpikeWindow = 50, kSpikeWarmup = 20;
// run.cuda_graph: eager steps of each fit() before the capture, so that everything a step creates
// lazily (bf16 weight copies, cuBLASLt handles and algorithms, kernel attributes, the allocator's
// cached blocks) exists before it is recorded. Two: the first step creates, the second finds.
constexpr int64_t kGraphWarmupSteps = 2;

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

// Masked (chat) datasets: each micro-batch's loss is a mean over its own trained targets, and the
// step's loss must be the mean over every trained target of the step on every rank, however the
// targets fall into micro-batches. So the step's batches are read first and their trained targets
// counted (one host all-reduce per step); micro-batch i's mean is then weighted by its share.
struct StepTokens {
  std::vector<double> micro;  // trained targets of each micro-batch of this rank
  double total = 0;           // of the whole step, all ranks
  // DataParallel averages gradients over the ranks, hence the world size. A step without a
  // trained target weighs every micro-batch 0 (cross_entropy is 0, not NaN, when all are ignored).
  float weight(std::size_t i, int world_size) const {
    return total > 0 ? static_cast<float>(micro[i] * world_size / total) : 0.f;
  }
};

double trained_targets(const data::Batch& batch) {
  const int32_t* targets = batch.targets.data<int32_t>();
  int64_t n = 0;
  for (int64_t i = 0; i < batch.targets.numel(); ++i) n += targets[i] != -1;
  return static_cast<double>(n);
}

StepTokens count_step_tokens(const std::vector<data::Batch>& batches, dist::Comm& comm) {
  StepTokens out;
  for (const data::Batch& batch : batches) {
    const double n = trained_targets(batch);
    out.micro.push_back(n);
    out.total += static_cast<double>(n);
  }
  if (comm.world_size() > 1) comm.all_reduce_host(&out.total, 1, dist::ReduceOp::sum);
  return out;
}

bool looks_like_checkpoint(const fs::path& dir) {
  return fs::is_directory(dir) && fs::exists(dir / io::kConfigFile);
}

}  // namespace

struct Trainer::Impl {
  Config config;
  Callbacks callbacks;
  ComputeOptions compute;  // the run's settings, in force (ComputeScope) during set-up, fit and evaluate
  DataPaths paths;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<nn::CausalLM> model;
  std::unique_ptr<optim::AdamW> optimizer;
  std::unique_ptr<optim::Muon> muon;  // training.optimizer: muon: the hidden matrices; AdamW the rest
  std::unique_ptr<data::DataLoader> train_loader;
  std::unique_ptr<data::DataLoader> val_loader;
  std::unique_ptr<dist::Comm> comm;
  std::unique_ptr<DataParallel> dp;     // after comm, model and optimizer: it refers to them
  Device device = Device::cpu();        // where the model, its gradients and the moments live
  std::unique_ptr<BatchUpload> upload;  // token batches to `device`
  // A GPU run (without Muon, whose update reads its own values back): each step's loss, norm and
  // verdict stay on the device until settle_device_steps reads them; the lr of each such step.
  std::unique_ptr<optim::DeviceStep> device_step;
  std::vector<float> pending_lr;
  // run.cuda_graph, per fit(): the captured step (null before the capture), the eager steps run
  // so far, and whether the capture failed (then every step runs eagerly, as without a graph).
  std::unique_ptr<CudaGraph> step_graph;
  int64_t graph_eager_steps = 0;
  bool graph_failed = false;
  optim::LrSchedule schedule;
  int64_t block_size = 0;
  int64_t tokens_per_step = 0;
  double flops_per_token = 0;  // the model's, for sequences of block_size
  double peak_flops = 0;       // per process: logging.peak_gflops, or measured on the CPU; 0: no MFU
  int64_t total_steps = 0;  // 0: bounded by max_time only

  // Run state (saved in trainer_state.json).
  int64_t step = 0;
  double elapsed_before = 0;  // wall time of earlier sessions of this run
  LossGuard guard;
  EarlyStopping early;
  std::string last_checkpoint;

  fs::path out_dir;
  std::unique_ptr<Checkpointer> checkpointer;
  std::unique_ptr<RunLog> run_log;  // while fit() runs
  std::unique_ptr<TaskSuite> tasks;  // eval.tasks / eval.text; null when none

  // --- set-up ------------------------------------------------------------------------------

  void setup(std::unique_ptr<nn::CausalLM> given) {
    check_device();
    make_comm();
    check_cuda_graph();
    const ComputeScope scope(compute);
    paths = resolve_data(config.data);
    check_paths();
    LMF_CHECK(!config.early_stopping.enabled || !paths.val.empty(),
              "early_stopping.enabled needs validation data: set data.val, or point data.train at a "
              "prepared directory with a val.bin");
    if (!paths.tokenizer.empty()) {
      try {
        tokenizer = data::load_tokenizer(paths.tokenizer);
      } catch (const Error& e) {
        throw Error(str("data.tokenizer: ", e.what()));
      }
    }
    const bool caller_built = given != nullptr;
    model = given ? std::move(given) : build_model();
    if (tokenizer)
      LMF_CHECK(tokenizer->vocab_size() <= model->vocab_size(), "vocabulary mismatch: tokenizer '",
                paths.tokenizer, "' has ", tokenizer->vocab_size(), " tokens but the model has ",
                model->vocab_size(), " (model.vocab_size / model.init)");
    block_size = config.model.block_size;
    LMF_CHECK(block_size <= model->context_size(), "model.block_size ", block_size,
              " exceeds the model's ", model->context_size(), " positions (", config.model.init, ")");
    tasks = make_task_suite(config.eval, tokenizer.get(), block_size);
    apply_lora(caller_built);
    apply_freeze();
    // After LoRA (which rebuilds the slabs where they are) and before the optimizer, whose moments
    // are allocated beside the slab.
    if (model->slab()->device() != device) model->to(device);
    upload = std::make_unique<BatchUpload>(device);
    tokens_per_step = config.training.batch_size * block_size * config.training.grad_accum_steps * comm->world_size();
    total_steps = config.training.max_steps;
    if (config.training.max_tokens > 0) {
      const int64_t by_tokens = (config.training.max_tokens + tokens_per_step - 1) / tokens_per_step;
      total_steps = total_steps > 0 ? std::min(total_steps, by_tokens) : by_tokens;
    }
    LMF_CHECK(total_steps > 0 || config.training.schedule == optim::ScheduleKind::constant,
              "training.schedule: cosine needs max_steps or max_tokens to know where decay ends");
    make_loaders();
    make_optimizer();
    dp = std::make_unique<DataParallel>(*comm, *model, *optimizer, DataParallelOptions{config.distributed.zero});
    if (device.is_cuda() && !muon) {
      // Read at every log line (and evaluation, checkpoint): at most logging.interval steps apart.
      device_step = std::make_unique<optim::DeviceStep>(device, std::max<int64_t>(1, config.logging.interval));
      compute.device_id_checks = false;  // the loaders check every id on the host
    }
    LMF_CHECK(!config.run.cuda_graph || device_step, "run.cuda_graph: true needs the GPU step that decides on "
              "the device, which training.optimizer: muon does not take (its update reads values back)");
    out_dir = config.run.out_dir;
    checkpointer = std::make_unique<Checkpointer>(out_dir, config.checkpoint.keep_last);
    guard = LossGuard(config.training.spike_zscore, kSpikeWindow, kSpikeWarmup);
    early = EarlyStopping(config.early_stopping);
    flops_per_token = model->flops_per_token(block_size);
    if (config.logging.peak_gflops > 0) {
      peak_flops = config.logging.peak_gflops * 1e9;
    } else if (device.is_cpu()) {
      peak_flops = measured_cpu_gflops() * 1e9;
    } else {
      peak_flops = device_peak_flops(device, MatmulRate::bf16);  // GPU products take bf16 operands
    }
  }

  // run.cuda_graph: the GPU step is captured after warm-up steps and replayed (queue_graph_step).
  // Config validation refused what no capture can hold (accumulation, dropout, a CPU device named,
  // Muon); here the resolved device and the world size are known.
  void check_cuda_graph() const {
    if (!config.run.cuda_graph) return;
    LMF_CHECK(device.is_cuda(), "run.cuda_graph: true needs a GPU (run.device resolved to ", device.str(),
              "); a CUDA graph records GPU work");
    LMF_CHECK(comm->world_size() == 1, "run.cuda_graph: true cannot capture a data-parallel step (",
              comm->world_size(), " processes): the gradient all-reduce is not recorded yet");
  }

  // run.device -> `device`. `auto` is the CPU (docs/config.md says why); cuda and cuda:N need a
  // visible GPU. With NCCL, make_comm may still replace cuda by the GPU of this rank.
  void check_device() {
    const bool bf16_products = config.run.matmul_precision == Precision::bf16;
    LMF_CHECK(!bf16_products || cpu_matmul_bf16_available(), "run.matmul_precision: bf16 needs a CPU with "
              "AVX-512 BF16 (VDPBF16PS), which this one lacks; use fp32");
    // Mixed precision multiplies in bf16 where the CPU can (elsewhere its bf16 operands are widened
    // and the products are f32: the activations are still stored in bf16).
    compute.mixed_bf16 = config.run.precision == Precision::bf16;
    compute.cpu_matmul_bf16 = bf16_products || (compute.mixed_bf16 && cpu_matmul_bf16_available());
    compute.threads = config.run.threads;
    const DeviceSetting& want = config.run.device;
    if (want.kind != DeviceKind::cuda) {
      device = Device::cpu();
      return;
    }
    LMF_CHECK(cuda_available(), "run.device: ", want.str(), " requested but no CUDA GPU is available",
#ifdef LMF_WITH_CUDA
              " on this machine"
#else
              " (this build has no CUDA support)"
#endif
    );
    const int index = std::max(0, want.index);
    LMF_CHECK(index < cuda_device_count(), "run.device: ", want.str(), " but only ",
              cuda_device_count(), " CUDA GPU(s) are visible (cuda:0 to cuda:", cuda_device_count() - 1, ")");
    device = parse_device("cuda:" + std::to_string(index));
  }

  void check_paths() {
    // expand_shard_paths' own errors name a path but not the key that named it.
    const auto shards = [](const std::string& key, const std::string& spec) {
      try {
        LMF_CHECK(!data::expand_shard_paths(spec).empty(), "no token shards match '", spec, "'");
      } catch (const Error& e) {
        throw Error(str(key, ": ", e.what()));
      }
    };
    shards("data.train", paths.train);
    if (!paths.val.empty()) shards("data.val", paths.val);
    if (config.model.init != "scratch")
      LMF_CHECK(looks_like_checkpoint(config.model.init), "model.init: '", config.model.init,
                "' is neither 'scratch' nor a checkpoint directory with config.json");
    if (config.checkpoint.resume == ResumeMode::path)
      LMF_CHECK(fs::exists(fs::path(config.checkpoint.resume_path) / kStateFile), "checkpoint.resume: '",
                config.checkpoint.resume_path, "' is not a checkpoint directory (no ", kStateFile, ")");
  }

  std::unique_ptr<nn::CausalLM> build_model() {
    const ModelConfig& m = config.model;
    if (m.init != "scratch") {
      auto loaded = detail::load_model(m.init, config.run.seed);
      if (m.vocab_size > 0)
        LMF_CHECK(m.vocab_size == loaded->vocab_size(), "model.vocab_size ", m.vocab_size,
                  " differs from the checkpoint's ", loaded->vocab_size(), " (", m.init, ")");
      return loaded;
    }
    const int64_t vocab = m.vocab_size > 0 ? m.vocab_size : (tokenizer ? tokenizer->vocab_size() : 0);
    LMF_CHECK(vocab > 0, "model.vocab_size: not set and no tokenizer found (set data.tokenizer)");
    return detail::build_model(m, vocab, config.run.seed);
  }

  // Before apply_freeze (its patterns may freeze adapters too) and before the optimizer, whose
  // moments must cover the adapters. On resume, the checkpoint overwrites A and B by name.
  void apply_lora(bool caller_built) {
    // An adapted model.init is fine-tuned as the function it computes: merged, then re-adapted.
    if (!caller_built && detail::has_lora(*model)) detail::merge_lora(*model);
    if (config.finetune.lora.rank <= 0) return;
    detail::add_lora(*model, config.finetune.lora, config.run.seed);
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
    options.order = config.data.order;
    options.seed = config.run.seed;
    options.rank = comm->rank();
    options.world_size = comm->world_size();
    options.vocab_size = tokenizer ? tokenizer->vocab_size() : model->vocab_size();
    options.mask_targets = config.training.loss == LossTargets::assistant;
    train_loader = std::make_unique<data::DataLoader>(paths.train, options);
    LMF_CHECK(config.training.loss != LossTargets::assistant || train_loader->masked(), "training.loss: assistant "
              "needs loss masks beside the shards (X.bin.mask), and data.train '", paths.train, "' has none; "
              "prepare the data with `lmforge prepare --format chat` or use training.loss: all");
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
    std::vector<std::string> muon_names;
    if (config.training.optimizer == OptimizerKind::muon) {
      muon_names = optim::muon_parameter_names(*model);
      optim::MuonConfig mc;
      mc.lr = config.training.muon_lr;
      mc.momentum = config.training.muon_momentum;
      mc.weight_decay = config.training.muon_weight_decay;
      mc.ns_steps = config.training.muon_ns_steps;
      muon = std::make_unique<optim::Muon>(*model, mc, muon_names);
    }
    optimizer = std::make_unique<optim::AdamW>(*model, oc, muon_names);
    schedule.kind = config.training.schedule;
    schedule.lr = config.training.lr;
    schedule.min_lr = config.training.min_lr;
    schedule.warmup_iters = config.training.warmup_steps;
    schedule.decay_iters = std::max<int64_t>(total_steps, config.training.warmup_steps + 1);
    schedule.validate();
  }

  bool is_root() const { return comm->rank() == 0; }

  void make_comm() {
    const DistributedConfig& d = config.distributed;
    const std::string device_text = config.run.device.str();
    const dist::LaunchInfo launch = dist::launch_info();
    LMF_CHECK(d.backend != CommBackend::none || launch.world_size == 1, "distributed.backend: none, but the launcher (",
              launch.launcher, ") started ", launch.world_size, " processes; use auto or mpi");
    // The communicator must take buffers where the gradients are: NCCL for GPUs, MPI for the CPU.
    CommBackend backend = d.backend;
    if (device.is_cuda() && backend == CommBackend::automatic && launch.world_size > 1) {
      LMF_CHECK(dist::nccl_built(), "distributed.backend: auto: run.device ", device_text, " with ",
                launch.world_size, " processes needs NCCL, and this build has none; rebuild with NCCL or train on "
                "the CPU (run.device: cpu)");
      backend = CommBackend::nccl;
    }
    LMF_CHECK(backend != CommBackend::nccl || device.is_cuda(), "distributed.backend: nccl reduces GPU tensors, and run.device "
              "is ", device_text, "; set run.device: cuda, or use mpi (or auto) on the CPU");
    LMF_CHECK(backend != CommBackend::mpi || device.is_cpu() || launch.world_size == 1, "distributed.backend: mpi reduces host "
              "buffers, and run.device is ", device_text, "; use nccl (or auto) to train on GPUs");
    comm = dist::make_comm(to_string(backend), dist::CommOptions{d.timeout});
    if (comm->backend() == "nccl") {
      // Each rank trains on the GPU its communicator was opened on (local rank modulo the GPUs).
      LMF_CHECK(config.run.device.index < 0 || comm->device() == device, "run.device: ", device_text,
                " names one GPU, but with distributed.backend: nccl rank ", comm->rank(), " uses ",
                comm->device().str(), "; use run.device: cuda");
      device = comm->device();
    }
    // Ranks on one node share its cores: unless run.threads says otherwise, each takes its part.
    if (config.run.threads == 0 && launch.local_size > 1)
      compute.threads = std::max(1, omp_get_num_procs() / launch.local_size);
  }

  // --- checkpoints -------------------------------------------------------------------------

  TrainState train_state() const {
    TrainState s;
    s.step = step;
    s.elapsed_s = elapsed();
    s.dropout_rng = model->dropout_generator().state();
    s.loader = train_loader->position();
    s.best_val_loss = early.best();
    s.best_step = early.best_step();
    s.evals_without_improvement = early.evals_without_improvement();
    s.recent_losses = guard.recent();
    s.config_yaml = config.to_yaml();
    return s;
  }

  // Every rank calls this (a sharded optimizer's moments are gathered); rank 0 alone writes.
  // AdamW's moments (gathered when sharded) and Muon's momentum buffers, by checkpoint name.
  io::NamedTensors checkpoint_moments() {
    io::NamedTensors moments = dp->optimizer_moments();
    if (muon)
      for (auto& entry : muon_moments(*muon)) moments.push_back(std::move(entry));
    return moments;
  }

  void write_checkpoint(const fs::path& target) {
    const io::NamedTensors moments = checkpoint_moments();
    if (!is_root()) return;
    checkpointer->write(target, *model, moments, optimizer->step_count(), train_state(), tokenizer.get());
  }

  void save_periodic() {
    const io::NamedTensors moments = checkpoint_moments();
    if (is_root()) checkpointer->save(*model, moments, optimizer->step_count(), train_state(), tokenizer.get());
    last_checkpoint = checkpointer->step_dir(step).string();
    event("checkpoint", last_checkpoint);
  }

  void restore(const fs::path& dir) {
    const TrainState s = Checkpointer::load(dir, *model, *optimizer, muon.get());
    step = s.step;
    elapsed_before = s.elapsed_s;
    train_loader->set_position(s.loader);
    early.set_state(s.best_val_loss, s.best_step, s.evals_without_improvement);
    guard.set_recent(s.recent_losses);
    last_checkpoint = dir.string();
  }

  // resume: auto picked the newest checkpoint; when its trainer_state.json is damaged, the error
  // names the newest intact older one, so that the user need not search for it. (A shape that
  // differs from the config is not damage: every checkpoint of the run has it.)
  void restore_newest(const fs::path& newest) {
    try {
      Checkpointer::read_state(newest);
    } catch (const Error& e) {
      const fs::path older = checkpointer->newest_intact(newest);
      throw Error(older.empty()
                      ? str("resume: ", e.what(), "; no older intact checkpoint in ", (out_dir / "checkpoints").string(),
                            " (start over with checkpoint.resume: never)")
                      : str("resume: ", e.what(), "; the newest intact checkpoint is ", older.string(),
                            ": resume from it with checkpoint.resume=", older.string()));
    }
    restore(newest);
  }

  // A problem found on rank 0 (the only rank that looks at the run directory), raised on every
  // rank so that none waits in a collective for a rank that left.
  void raise_agreed(std::string root_error) {
    root_error = dp->broadcast_string(std::move(root_error));
    if (!root_error.empty()) throw Error(root_error);
  }

  // resume: never in a directory that holds another run: refuse, or set it aside when forced.
  fs::path prepare_fresh_start() {
    std::string problem;
    fs::path aside;
    if (is_root() && checkpointer->has_previous_run()) {
      if (!config.checkpoint.force_fresh) {
        problem = str("checkpoint.resume: never, but run.out_dir '", out_dir.string(), "' holds an earlier run "
                      "(checkpoints, best/, final/ or metrics.jsonl); resume it with checkpoint.resume: auto, set "
                      "another run.out_dir, or pass --force (checkpoint.force_fresh: true) to move it aside "
                      "into a new ", out_dir.string(), ".previous-<time> directory");
      } else {
        try {
          aside = checkpointer->set_aside_previous_run();
        } catch (const Error& e) {
          problem = e.what();
        }
      }
    }
    raise_agreed(problem);
    return aside;
  }

  // --- metrics -----------------------------------------------------------------------------

  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  double elapsed() const {
    return elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }

  void event(const std::string& name, const std::string& detail) { event_at(step, name, detail); }
  void event_at(int64_t at, const std::string& name, const std::string& detail) {
    if (run_log) run_log->log_event(at, name, detail, elapsed());
    if (callbacks.on_event) callbacks.on_event(name, detail);
  }

  // --- evaluation --------------------------------------------------------------------------

  // Mixed precision: the bf16 copies of the weights that products read, one pass over the slab.
  void refresh_weight_copies() {
    if (compute.mixed_bf16) model->refresh_bf16_copies();
  }

  float evaluate() {
    const ComputeScope scope(compute);
    refresh_weight_copies();
    LMF_CHECK(val_loader, "evaluate: no validation data (data.val)");
    NoGradGuard no_grad;
    model->eval();
    val_loader->reset();
    const int64_t batches = std::min<int64_t>(config.eval.batches, std::max<int64_t>(1, val_loader->batches_per_epoch()));
    // The batch losses stay where they are computed and are read once at the end.
    Tensor losses = Tensor::empty({batches}, DType::f32, device);  // (batches)
    std::vector<double> trained(static_cast<std::size_t>(batches), 0);  // masked: targets per batch
    for (int64_t i = 0; i < batches; ++i) {
      const data::Batch host = val_loader->next();
      if (val_loader->masked()) trained[i] = trained_targets(host);
      const auto batch = upload->to_device(host);
      slot(losses, i).copy_(model->forward_loss(batch.inputs, batch.targets));
    }
    model->train();
    double total = 0;
    if (val_loader->masked()) {
      // The mean over every trained target of the evaluation, all ranks together.
      const std::vector<float> values = losses.to_vector();
      double sums[2] = {0, 0};
      for (int64_t i = 0; i < batches; ++i) sums[0] += values[i] * trained[i], sums[1] += trained[i];
      if (comm->world_size() > 1) comm->all_reduce_host(sums, 2, dist::ReduceOp::sum);
      return sums[1] > 0 ? static_cast<float>(sums[0] / sums[1]) : 0.f;
    }
    for (float loss : losses.to_vector()) total += loss;
    // Each rank read its own slice of the validation batches; the mean of equal-sized means.
    return static_cast<float>(dp->mean(total / batches));
  }

  // Element i of a 1-D tensor, as a one-element view that can be written with copy_.
  static Tensor slot(const Tensor& t, int64_t i) {
    return Tensor::view_of(t.storage(), {}, t.dtype(), t.offset() + i);
  }

  // Returns true when early stopping says to stop.
  bool run_evaluation() {
    const float val = evaluate();
    const bool improved = early.update(step, val);
    if (run_log) run_log->log_eval(step, val, elapsed(), improved);
    if (callbacks.on_eval) callbacks.on_eval(step, val);
    if (improved) write_checkpoint(out_dir / "best");
    return early.should_stop();
  }

  // eval.tasks / eval.text. Every rank scores them all (no collective to wait on); rank 0 logs.
  void run_task_evaluation() {
    if (!tasks) return;
    NoGradGuard no_grad;
    model->eval();
    TaskEvalOptions options;
    options.device = device;
    options.block_size = block_size;
    options.batch_size = config.training.batch_size;
    const TaskSuite::Outcome outcome = tasks->run(*model, options);
    model->train();
    if (!run_log) return;
    for (const std::string& line : task_metrics_lines(outcome, step, elapsed())) run_log->write_line(line);
    run_log->message(task_metrics_message(outcome, step));
  }

  // --- GPU steps ---------------------------------------------------------------------------

  // Reads the steps decided on the device since the last read and does, for each in order, what
  // the host path does at once: the skip events (on_nan: stop throws here, naming the step), the
  // loss guard's window, the step callbacks, and the log line when `log_due` (for the last one).
  // Then the spike test's reference and AdamW's step count follow the window. Returns true when a
  // callback asked to stop.
  bool settle_device_steps(TrainResult& result, bool log_due, int64_t& tokens_since_log,
                           std::chrono::steady_clock::time_point& log_clock) {
    if (!device_step || device_step->pending() == 0) return false;
    using Skip = optim::DeviceStep::Skip;
    comm->synchronize();  // a peer that died is an error here, not a read that never returns
    const std::vector<optim::DeviceStep::Record> records = device_step->read();
    LMF_CHECK(records.size() == pending_lr.size(), "trainer: ", records.size(), " device steps read, ",
              pending_lr.size(), " queued");
    optimizer->set_step_count(device_step->applied());
    const auto last_good = [&] { return last_checkpoint.empty() ? std::string("none (no checkpoint written yet)") : last_checkpoint; };
    bool stop = false;
    for (std::size_t i = 0; i < records.size(); ++i) {
      const optim::DeviceStep::Record& r = records[i];
      const int64_t at = r.step + 1;
      double norm = r.grad_norm;
      if (r.skip == Skip::non_finite_loss || r.skip == Skip::non_finite_norm) {
        const char* what = r.skip == Skip::non_finite_loss ? "training loss" : "gradient norm";
        const double value = r.skip == Skip::non_finite_loss ? double(r.loss) : r.grad_norm;
        if (config.training.on_nan == NanPolicy::stop)
          throw Error(str("step ", at, ": ", what, " is ", value, "; stopping (its update was skipped on the GPU; "
                          "steps up to ", step, " were queued after it). Last good checkpoint: ", last_good()));
        event_at(at, "skip", r.skip == Skip::non_finite_loss ? fmt::format("non-finite loss {}", r.loss)
                                                             : std::string("non-finite gradient norm"));
      } else if (r.skip == Skip::spike) {
        event_at(at, "skip", fmt::format("loss spike {:.4f}", r.loss));
      } else {
        guard.accept(r.loss);
      }
      if (r.skip == Skip::non_finite_loss || r.skip == Skip::spike) norm = 0;  // as the host path: no clip
      result.last_train_loss = r.loss;
      StepMetrics m{at, r.loss, pending_lr[i], norm, 0.0, 0.0, elapsed(), r.skip != Skip::none};
      if (log_due && i + 1 == records.size()) {
        const auto now = std::chrono::steady_clock::now();
        const double dt = std::chrono::duration<double>(now - log_clock).count();
        m.tokens_per_sec = dt > 0 ? tokens_since_log / dt : 0.0;
        m.mfu = run_log->mfu(m.tokens_per_sec);
        log_clock = now;
        tokens_since_log = 0;
        run_log->log_step(m);
      }
      if (callbacks.on_step && !callbacks.on_step(m)) stop = true;
    }
    pending_lr.clear();
    const LossGuard::SpikeReference reference = guard.spike_reference();
    device_step->set_spike_reference(reference.mean, reference.sd, reference.zscore);
    return stop;
  }

  // The GPU step from the bf16 refresh of the weights to the update, queued without a wait: the
  // loss, the norm and the verdicts are decided on the device and read at the next log line,
  // evaluation or checkpoint (settle_device_steps). `batch_of(micro)` gives micro-batch `micro` on
  // the device, `weight_of(micro)` its weight in the step's loss. Nothing here reads back or copies
  // from the host, so the same call is what run.cuda_graph records.
  void queue_device_step(const std::function<data::Batch(int64_t)>& batch_of,
                         const std::function<float(int64_t)>& weight_of, bool masked) {
    const auto& t = config.training;
    refresh_weight_copies();  // the weights of the last optimizer step (or of a checkpoint)
    model->zero_grad();
    // Each micro-batch's loss stays where it was computed; set_loss sums them on the device.
    Tensor micro_losses = Tensor::empty({t.grad_accum_steps}, DType::f32, device);  // (grad_accum_steps)
    for (int64_t micro = 0; micro < t.grad_accum_steps; ++micro) {
      const data::Batch batch = batch_of(micro);
      Tensor loss = model->forward_loss(batch.inputs, batch.targets);
      const float weight = weight_of(micro);
      slot(micro_losses, micro).copy_(masked ? scale(loss.detach(), weight) : loss.detach());
      dp->backward(scale(loss, weight), micro == t.grad_accum_steps - 1);
    }
    device_step->set_loss(micro_losses, masked ? 1.f : 1.f / static_cast<float>(t.grad_accum_steps));
    dp->mean_on_device(device_step->loss_data());
    dp->clip_gradients(*device_step, step, t.grad_clip);
    optimizer->step(*device_step);
    dp->after_step();
  }

  // run.cuda_graph (one process, one micro-batch per step): the batch is copied into the static
  // input tensors (queued, outside any capture), then the step runs eagerly for the first
  // kGraphWarmupSteps steps of this fit(), is captured at the next (the capture runs it once) and
  // replayed after that. What changes per step reaches the replay through device memory: the
  // batch (the static tensors), the lr (AdamW's scalars, rewritten by its hook before each
  // launch), t and the bias corrections (counted on the device by step_decide) and the ring slot
  // (the device's counter; DeviceStep's hook counts the replay on the host). The loss weight is
  // 1: with one micro-batch on one process it is 1 without masks, and with masks 1 or, for a batch
  // with no trained target, 0, where the loss and every gradient are 0 either way. If the capture
  // fails, the step runs eagerly, an event says why, and so do the remaining steps of this fit().
  void queue_graph_step(const data::Batch& host_batch, bool masked) {
    const data::Batch batch = upload->to_static(host_batch);
    const auto body = [&] {
      queue_device_step([&](int64_t) { return batch; }, [](int64_t) { return 1.f; }, masked);
    };
    if (step_graph) {
      step_graph->replay();
      return;
    }
    if (graph_failed || graph_eager_steps < kGraphWarmupSteps) {
      body();
      ++graph_eager_steps;
      return;
    }
    auto graph = std::make_unique<CudaGraph>();
    const int64_t pending = device_step->pending();
    try {
      graph->capture(device, body);
    } catch (const Error& e) {
      // Nothing recorded ran; only the host's count of decided steps may have moved.
      if (device_step->pending() > pending) device_step->forget_last_decision();
      graph_failed = true;
      event("cuda_graph", str("step ", step + 1, " could not be captured, training on without a CUDA graph: ",
                              e.what()));
      body();
      return;
    }
    step_graph = std::move(graph);
    event("cuda_graph", str("step ", step + 1, " captured after ", graph_eager_steps,
                            " eager steps; later steps replay it"));
  }

  // --- the loop ----------------------------------------------------------------------------

  TrainResult fit() {
    const ComputeScope scope(compute);
    fs::create_directories(out_dir);
    // One process per run directory: rank 0 holds the lock until fit() returns (or the process dies).
    std::unique_ptr<RunLock> lock;
    std::string lock_error;
    if (is_root()) {
      try {
        lock = std::make_unique<RunLock>(out_dir);
      } catch (const Error& e) {
        lock_error = e.what();
      }
    }
    raise_agreed(lock_error);
    if (is_root()) checkpointer->remove_leftovers();
    bool resumed = false;
    fs::path set_aside;
    if (config.checkpoint.resume == ResumeMode::automatic) {
      // Rank 0's listing decides, so that every rank resumes the same step.
      std::string newest;
      if (is_root() && !checkpointer->list().empty()) newest = checkpointer->list().back().string();
      newest = dp->broadcast_string(newest);
      if (!newest.empty()) restore_newest(newest), resumed = true;
    } else if (config.checkpoint.resume == ResumeMode::path) {
      restore(config.checkpoint.resume_path), resumed = true;
    } else {
      set_aside = prepare_fresh_start();
    }
    RunLogOptions log_options;
    if (is_root()) {
      io::write_file_atomic(out_dir / "config.yaml", config.to_yaml());
      log_options.metrics_path = out_dir / "metrics.jsonl";
    }
    log_options.progress = is_root() ? config.logging.progress : ProgressMode::none;
    log_options.total_steps = total_steps;
    log_options.tokens_per_step = tokens_per_step;
    log_options.flops_per_token = flops_per_token;
    log_options.peak_flops = peak_flops;
    log_options.world_size = comm->world_size();
    run_log = std::make_unique<RunLog>(log_options);
    run_log->open(resumed ? step : -1);
    // Whatever way fit() leaves, the log goes with it (its progress bar ends its line).
    struct LogScope {
      std::unique_ptr<RunLog>& log;
      ~LogScope() { log.reset(); }
    } log_scope{run_log};
    if (callbacks.on_start) callbacks.on_start(step);
    if (!set_aside.empty()) event("set_aside", set_aside.string());
    if (resumed) event("resume", last_checkpoint);
    started = std::chrono::steady_clock::now();
    // A graph of an earlier fit() may hold addresses a checkpoint load has since written: record
    // the step again (after its warm-up steps) in this one.
    step_graph.reset();
    graph_eager_steps = 0;
    graph_failed = false;
    if (device_step) {
      device_step->set_applied(optimizer->step_count());
      const LossGuard::SpikeReference reference = guard.spike_reference();
      device_step->set_spike_reference(reference.mean, reference.sd, reference.zscore);
    }

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
      if (t.max_time > 0 && dp->agree_any(elapsed() >= t.max_time)) {
        result.stop_reason = "max_time";
        break;
      }
      const float lr = static_cast<float>(schedule.lr_at(step));
      const bool masked = train_loader->masked();
      std::vector<data::Batch> read_ahead;
      StepTokens counted;
      if (masked) {
        for (int64_t micro = 0; micro < t.grad_accum_steps; ++micro) read_ahead.push_back(train_loader->next());
        counted = count_step_tokens(read_ahead, *comm);
      }
      bool stop = false;
      if (device_step) {
        optimizer->set_lr(lr);  // read by the update (or a replay's hook) when it is queued
        if (config.run.cuda_graph) {
          queue_graph_step(masked ? read_ahead[0] : train_loader->next(), masked);
        } else {
          queue_device_step(
              [&](int64_t micro) { return upload->to_device(masked ? read_ahead[micro] : train_loader->next()); },
              // Masked: each micro-batch's share of the step's trained targets, so the sum is the mean.
              [&](int64_t micro) { return masked ? counted.weight(micro, comm->world_size()) : inv_accum; }, masked);
        }
        pending_lr.push_back(lr);
        ++step;
        tokens_since_log += tokens_per_step;
        const bool log_due = step % config.logging.interval == 0 || step == total_steps;
        const bool eval_due = config.eval.interval > 0 && step % config.eval.interval == 0;
        const bool checkpoint_due = config.checkpoint.interval > 0 && step % config.checkpoint.interval == 0;
        if (log_due || eval_due || checkpoint_due || device_step->pending() == device_step->capacity())
          if (settle_device_steps(result, log_due, tokens_since_log, log_clock)) stop = true, result.stop_reason = "callback";
      } else {
        refresh_weight_copies();  // the weights of the last optimizer step (or of a checkpoint)
        model->zero_grad();
        // Each micro-batch's loss is kept where it was computed; the host reads them once, after
        // the step's last backward pass.
        Tensor micro_losses = Tensor::empty({t.grad_accum_steps}, DType::f32, device);  // (grad_accum_steps)
        for (int64_t micro = 0; micro < t.grad_accum_steps; ++micro) {
          const auto batch = upload->to_device(masked ? read_ahead[micro] : train_loader->next());
          Tensor loss = model->forward_loss(batch.inputs, batch.targets);
          slot(micro_losses, micro).copy_(loss.detach());
          const float weight = masked ? counted.weight(micro, comm->world_size()) : inv_accum;
          dp->backward(scale(loss, weight), micro == t.grad_accum_steps - 1);
        }
        double loss_sum = 0;
        const std::vector<float> micro_values = micro_losses.to_vector();
        for (std::size_t i = 0; i < micro_values.size(); ++i) loss_sum += masked ? micro_values[i] * counted.micro[i] : micro_values[i];
        // The mean over ranks of equal-sized means: the loss of the whole global batch, the same on
        // every rank, so that the NaN and spike guards decide alike everywhere. Masked: the sum of
        // the token-weighted sums over the step's trained tokens.
        loss_sum = dp->mean(loss_sum);
        const float loss = !masked ? static_cast<float>(loss_sum * inv_accum)
                                   : counted.total > 0 ? static_cast<float>(loss_sum * comm->world_size() / counted.total) : 0.f;
        bool skipped = false;
        double norm = 0;
        float grad_scale = 1.f;
        const LossVerdict verdict = guard.check(loss);
        if (verdict == LossVerdict::non_finite) {
          if (t.on_nan == NanPolicy::stop) {
            throw Error(str("step ", step + 1, ": training loss is ", loss, "; stopping. Last good checkpoint: ",
                            last_checkpoint.empty() ? "none (no checkpoint written yet)" : last_checkpoint));
          }
          skipped = true;
          event("skip", fmt::format("non-finite loss {}", loss));
        } else if (verdict == LossVerdict::spike) {
          skipped = true;
          event("skip", fmt::format("loss spike {:.4f}", loss));
        } else {
          // The clip factor goes into the update (no pass scaling the slab on the CPU).
          const DataParallel::Norm n = dp->gradient_norm(t.grad_clip);
          norm = n.norm;
          grad_scale = n.scale;
          if (!std::isfinite(norm)) {
            LMF_CHECK(t.on_nan == NanPolicy::skip, "step ", step + 1, ": gradient norm is ", norm,
                      "; stopping. Last good checkpoint: ", last_checkpoint.empty() ? "none" : last_checkpoint);
            skipped = true;
            event("skip", "non-finite gradient norm");
          }
        }
        if (!skipped) {
          optimizer->set_lr(lr);
          optimizer->step(grad_scale);
          if (muon) {
            // The schedule's multiplier of this step, applied to Muon's own peak lr.
            muon->set_lr(config.training.muon_lr * (lr / config.training.lr));
            muon->step(grad_scale);
          }
          dp->after_step();
          guard.accept(loss);
        }
        ++step;
        tokens_since_log += tokens_per_step;
        result.last_train_loss = loss;

        if (step % config.logging.interval == 0 || step == total_steps) {
          const auto now = std::chrono::steady_clock::now();
          const double dt = std::chrono::duration<double>(now - log_clock).count();
          const double rate = dt > 0 ? tokens_since_log / dt : 0.0;
          StepMetrics m{step, loss, lr, norm, rate, run_log->mfu(rate), elapsed(), skipped};
          log_clock = now;
          tokens_since_log = 0;
          run_log->log_step(m);
          if (callbacks.on_step && !callbacks.on_step(m)) stop = true, result.stop_reason = "callback";
        } else if (callbacks.on_step) {
          StepMetrics m{step, loss, lr, norm, 0.0, 0.0, elapsed(), skipped};
          if (!callbacks.on_step(m)) stop = true, result.stop_reason = "callback";
        }
      }
      if (val_loader && config.eval.interval > 0 && step % config.eval.interval == 0) {
        if (run_evaluation()) {
          event("early_stop", fmt::format("no improvement in {} evaluations; best val_loss {:.4f} at step {}",
                                          early.evals_without_improvement(), early.best(), early.best_step()));
          stop = true;
          result.stop_reason = "early_stop";
        }
      }
      if (config.eval.interval > 0 && step % config.eval.interval == 0) run_task_evaluation();
      if (config.checkpoint.interval > 0 && step % config.checkpoint.interval == 0) save_periodic();
      // Every rank leaves at the same step: a signal (or a callback) on any one stops them all.
      double wants_stop[2] = {g_stop_requested.load() ? 1.0 : 0.0, stop ? 1.0 : 0.0};
      if (comm->world_size() > 1) comm->all_reduce_host(wants_stop, 2, dist::ReduceOp::max);
      if (wants_stop[0] > 0) {
        g_stop_requested.store(false);  // handled: a later fit() in this process runs normally
        result.stop_reason = "signal";
        stop = true;
      } else if (wants_stop[1] > 0 && !stop) {
        result.stop_reason = "callback";
        stop = true;
      }
      if (stop) break;
    }
    settle_device_steps(result, false, tokens_since_log, log_clock);  // steps since the last read
    // Not after a pause (signal, callback): an evaluation off the eval.interval grid would count
    // towards early stopping's patience, and the resumed run would stop earlier than an
    // uninterrupted one.
    const bool paused = result.stop_reason == "signal" || result.stop_reason == "callback";
    if (val_loader && !paused && result.stop_reason != "early_stop" &&
        (config.eval.interval == 0 || step % config.eval.interval != 0))
      run_evaluation();
    if (!paused && (config.eval.interval == 0 || step % config.eval.interval != 0)) run_task_evaluation();
    // A checkpoint of the last step, so resume: auto finds the run complete (or continues it).
    double need_last = 0;
    if (is_root()) {
      const auto listed = checkpointer->list();
      need_last = listed.empty() || listed.back() != checkpointer->step_dir(step);
    }
    if (comm->world_size() > 1) comm->broadcast_host(&need_last, sizeof need_last, 0);
    if (need_last > 0) save_periodic();
    if (result.stop_reason == "signal") event("interrupted", "stopped by signal after saving " + last_checkpoint);
    if (result.stop_reason == "early_stop" && early.restore_best() && early.best_step() >= 0) {
      if (is_root()) detail::load_weights(*model, out_dir / "best");
      dp->broadcast_parameters();
      event("restore_best", fmt::format("weights of step {} (val_loss {:.4f})", early.best_step(), early.best()));
    }
    write_checkpoint(out_dir / "final");
    event("final", (out_dir / "final").string());
    result.steps = step;
    result.best_val_loss = early.best();
    result.best_step = early.best_step();
    return result;
  }
};

Trainer::Trainer(Config config, Callbacks callbacks) : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
  impl_->callbacks = std::move(callbacks);
  impl_->setup(nullptr);
}

Trainer::Trainer(Config config, std::unique_ptr<nn::CausalLM> model, Callbacks callbacks)
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
nn::CausalLM& Trainer::model() { return *impl_->model; }
const Config& Trainer::config() const { return impl_->config; }

void Trainer::install_signal_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

}  // namespace lmf::train
