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
#include "lmforge/nn/lora.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/optim/clip.h"
#include "lmforge/optim/schedule.h"
#include "train/batch_upload.h"
#include "train/progress.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lmf::train {
namespace {

// The CPU's f32 GEMM rate with the current thread count, measured (~0.05 s) once per process and
// thread count: every later trainer in the process reuses it.
double measured_cpu_gflops() {
  static std::mutex mutex;
  static std::map<int, double> by_threads;
  const std::lock_guard<std::mutex> lock(mutex);
  const int threads = omp_get_max_threads();
  const auto it = by_threads.find(threads);
  return it != by_threads.end() ? it->second : by_threads[threads] = cpu_gemm_gflops();
}

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
  ComputeOptions compute;  // the run's settings, in force (ComputeScope) during set-up, fit and evaluate
  DataPaths paths;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<nn::GPT> model;
  std::unique_ptr<optim::AdamW> optimizer;
  std::unique_ptr<data::DataLoader> train_loader;
  std::unique_ptr<data::DataLoader> val_loader;
  std::unique_ptr<dist::Comm> comm;
  Device device = Device::cpu();        // where the model, its gradients and the moments live
  std::unique_ptr<BatchUpload> upload;  // token batches to `device`
  optim::LrSchedule schedule;
  int64_t block_size = 0;
  int64_t tokens_per_step = 0;
  double flops_per_token = 0;  // 6 N + 12 L C T (N without wpe), as PaLM and llm.c count
  double peak_flops = 0;       // per process: logging.peak_gflops, or measured on the CPU; 0: no MFU
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
    check_device();
    make_comm();
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
    const auto& mc = model->config();
    if (tokenizer)
      LMF_CHECK(tokenizer->vocab_size() <= mc.vocab_size, "vocabulary mismatch: tokenizer '",
                paths.tokenizer, "' has ", tokenizer->vocab_size(), " tokens but the model has ",
                mc.vocab_size, " (model.vocab_size / model.init)");
    block_size = config.model.block_size;
    LMF_CHECK(block_size <= mc.block_size, "model.block_size ", block_size,
              " exceeds the model's ", mc.block_size, " positions (", config.model.init, ")");
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
    LMF_CHECK(total_steps > 0 || config.training.schedule == "constant",
              "training.schedule: cosine needs max_steps or max_tokens to know where decay ends");
    make_loaders();
    make_optimizer();
    setup_data_parallel();
    out_dir = config.run.out_dir;
    flops_per_token = 6.0 * double(model->num_parameters(false)) +
                      12.0 * double(mc.n_layer) * double(mc.n_embd) * double(block_size);
    if (config.logging.peak_gflops > 0) {
      peak_flops = config.logging.peak_gflops * 1e9;
    } else if (device.is_cpu()) {
      peak_flops = measured_cpu_gflops() * 1e9;
    }
  }

  // run.device -> `device`. `auto` is the CPU (docs/config.md says why); cuda and cuda:N need a
  // visible GPU. With NCCL, make_comm may still replace cuda by the GPU of this rank.
  void check_device() {
    LMF_CHECK(config.run.precision == "fp32", "run.precision: bf16 is not implemented in this version (the ops "
              "store activations in f32; docs/kernels.md lists what is missing); use fp32");
    const bool bf16_products = config.run.matmul_precision == "bf16";
    LMF_CHECK(!bf16_products || cpu_matmul_bf16_available(), "run.matmul_precision: bf16 needs a CPU with "
              "AVX-512 BF16 (VDPBF16PS), which this one lacks; use fp32");
    compute.cpu_matmul_bf16 = bf16_products;
    compute.threads = config.run.threads;
    if (config.run.device == "auto" || config.run.device == "cpu") {
      device = Device::cpu();
      return;
    }
    const Device requested = parse_device(config.run.device);
    LMF_CHECK(cuda_available(), "run.device: ", config.run.device, " requested but no CUDA GPU is available",
#ifdef LMF_WITH_CUDA
              " on this machine"
#else
              " (this build has no CUDA support)"
#endif
    );
    LMF_CHECK(requested.index < cuda_device_count(), "run.device: ", config.run.device, " but only ",
              cuda_device_count(), " CUDA GPU(s) are visible (cuda:0 to cuda:", cuda_device_count() - 1, ")");
    device = requested;
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

  // Before apply_freeze (its patterns may freeze adapters too) and before the optimizer, whose
  // moments must cover the adapters. On resume, load_checkpoint overwrites A and B by name.
  void apply_lora(bool caller_built) {
    // An adapted model.init is fine-tuned as the function it computes: merged, then re-adapted.
    if (!caller_built && nn::has_lora(*model)) nn::merge_lora(*model);
    const LoraConfig& lora = config.finetune.lora;
    if (lora.rank <= 0) return;
    const nn::LoraOptions options{lora.rank, lora.alpha, lora.dropout, lora.targets, config.run.seed};
    try {
      options.validate();
    } catch (const Error& e) {
      throw Error(str("finetune.", e.what()));
    }
    nn::add_lora(*model, options);
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
    options.rank = comm->rank();
    options.world_size = comm->world_size();
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

  // --- data parallelism --------------------------------------------------------------------

  // Gradient buckets: whole parameters, at least 4M elements (16 MiB) each but the last, so that
  // per-message latency is negligible and several buckets are in flight together.
  static constexpr int64_t kBucketElements = int64_t(4) << 20;
  struct GradBucket {
    int64_t begin = 0, end = 0;  // slab elements, padding included
    int64_t pending = 0;         // parameters whose gradient is not final yet in this backward
  };
  std::vector<GradBucket> buckets;  // in reverse registration order: backward's order
  std::unordered_map<const TensorImpl*, std::size_t> bucket_of;  // parameter -> bucket
  std::shared_ptr<const nn::ParameterSlab> bucketed_slab;  // the slab the buckets were built for
  std::size_t next_bucket = 0;  // buckets start in index order, the same on every rank
  int64_t shard_size = 0;          // ZeRO-1: slab elements per rank (the last shard is padded)
  Tensor zero_full;    // ZeRO-1: (world_size * shard_size) on `device`, reduce-scatter in, all-gather out
  Tensor zero_shard;   // ZeRO-1: (shard_size) on `device`

  bool is_root() const { return comm->rank() == 0; }
  bool zero_enabled() const { return shard_size > 0 && comm->world_size() > 1; }

  void make_comm() {
    const DistributedConfig& d = config.distributed;
    const dist::LaunchInfo launch = dist::launch_info();
    LMF_CHECK(d.backend != "none" || launch.world_size == 1, "distributed.backend: none, but the launcher (",
              launch.launcher, ") started ", launch.world_size, " processes; use auto or mpi");
    // The communicator must take buffers where the gradients are: NCCL for GPUs, MPI for the CPU.
    std::string backend = d.backend;
    if (device.is_cuda() && backend == "auto" && launch.world_size > 1) {
      LMF_CHECK(dist::nccl_built(), "distributed.backend: auto: run.device ", config.run.device, " with ",
                launch.world_size, " processes needs NCCL, and this build has none; rebuild with NCCL or train on "
                "the CPU (run.device: cpu)");
      backend = "nccl";
    }
    LMF_CHECK(backend != "nccl" || device.is_cuda(), "distributed.backend: nccl reduces GPU tensors, and run.device "
              "is ", config.run.device, "; set run.device: cuda, or use mpi (or auto) on the CPU");
    LMF_CHECK(backend != "mpi" || device.is_cpu() || launch.world_size == 1, "distributed.backend: mpi reduces host "
              "buffers, and run.device is ", config.run.device, "; use nccl (or auto) to train on GPUs");
    comm = dist::make_comm(backend, dist::CommOptions{d.timeout});
    if (comm->backend() == "nccl") {
      // Each rank trains on the GPU its communicator was opened on (local rank modulo the GPUs).
      LMF_CHECK(config.run.device == "cuda" || comm->device() == device, "run.device: ", config.run.device,
                " names one GPU, but with distributed.backend: nccl rank ", comm->rank(), " uses ",
                comm->device().str(), "; use run.device: cuda");
      device = comm->device();
    }
    // Ranks on one node share its cores: unless run.threads says otherwise, each takes its part.
    if (config.run.threads == 0 && launch.local_size > 1)
      compute.threads = std::max(1, omp_get_num_procs() / launch.local_size);
  }

  void setup_data_parallel() {
    if (comm->world_size() == 1) return;
    // Rank 0's weights everywhere: a scratch model is seeded alike on every rank, but a model.init
    // read while another rank rewrites it, or a caller-built model, need not be.
    Tensor params = model->param_slab();
    comm->broadcast(params, 0);
    if (config.distributed.zero == 1) {
      const int64_t n = model->slab()->numel(), world = comm->world_size();
      shard_size = (n + world - 1) / world;
      const int64_t begin = std::min(n, comm->rank() * shard_size);
      optimizer->shard(begin, std::min(n, begin + shard_size));
      zero_full = Tensor::zeros({shard_size * world}, DType::f32, device);
      zero_shard = Tensor::zeros({shard_size}, DType::f32, device);
    }
  }

  // True on every rank when `local` is true on any: decisions that read clocks or signals.
  bool agree_any(bool local) {
    return comm->world_size() == 1 ? local : comm->all_reduce_scalar(local ? 1.0 : 0.0, dist::ReduceOp::max) > 0;
  }

  // Data parallelism without ZeRO averages the gradient slab over the ranks while the backward
  // pass of the last micro-batch runs: the engine reports each parameter whose gradient is final,
  // and a bucket's all-reduce is queued once all of its parameters are (and every bucket before it
  // has been queued, so that every rank queues them in the same order whatever the graph).
  bool overlap_enabled() const { return comm->world_size() > 1 && !zero_enabled(); }

  // Buckets of whole slab entries, from the last registered (whose gradients backward produces
  // first) to the first; together they cover the slab.
  void build_buckets() {
    const nn::ParameterSlab& slab = *model->slab();
    buckets.clear();
    bucket_of.clear();
    for (std::size_t i = slab.entries.size(); i-- > 0;) {
      if (buckets.empty() || buckets.back().end - buckets.back().begin >= kBucketElements) {
        const int64_t top = buckets.empty() ? slab.numel() : buckets.back().begin;
        buckets.push_back({top, top, 0});
      }
      buckets.back().begin = slab.entries[i].offset;
      bucket_of[slab.entries[i].param.impl().get()] = buckets.size() - 1;
    }
    if (!buckets.empty()) buckets.back().begin = 0;
    bucketed_slab = model->slab();
  }

  // Before the backward pass whose gradients are averaged: every trainable parameter pending.
  void begin_gradient_average() {
    if (bucketed_slab != model->slab()) build_buckets();
    for (GradBucket& b : buckets) b.pending = 0;
    for (const auto& e : model->slab()->entries)
      if (e.param.requires_grad()) ++buckets[bucket_of.at(e.param.impl().get())].pending;
    next_bucket = 0;
  }

  // The engine's hook: `leaf` has its final gradient for this step.
  void on_grad_final(const Tensor& leaf) {
    const auto it = bucket_of.find(leaf.impl().get());
    if (it == bucket_of.end()) return;  // not a parameter of the slab
    --buckets[it->second].pending;
    start_buckets(false);
  }

  void start_buckets(bool all) {
    float* g = model->slab()->grads.data<float>();
    for (; next_bucket < buckets.size() && (all || buckets[next_bucket].pending <= 0); ++next_bucket) {
      const GradBucket& b = buckets[next_bucket];
      if (b.end > b.begin) comm->all_reduce_start(g + b.begin, b.end - b.begin, dist::ReduceOp::avg);
    }
  }

  // After that backward pass: buckets holding parameters no gradient reached (or only frozen
  // ones) are queued now, then everything is waited for.
  void finish_gradient_average() {
    start_buckets(true);
    comm->wait_all();
  }

  // ZeRO-1, gradient half: this rank's shard of the averaged gradients lands in the grad slab (the
  // rest of the slab is left stale: the sharded optimizer never reads it), clipped by the global
  // norm. Returns that norm before clipping.
  double zero_reduce_gradients(double max_norm) {
    const Tensor& g = model->slab()->grads;
    const int64_t n = model->slab()->numel(), begin = optimizer->shard_begin(), end = optimizer->shard_end();
    copy_floats(zero_full, 0, g, 0, n);  // the padding past n stays zero
    comm->reduce_scatter(zero_full.data<float>(), zero_shard.data<float>(), shard_size, dist::ReduceOp::avg);
    copy_floats(g, begin, zero_shard, 0, end - begin);
    Tensor mine = Tensor::view_of(g.storage(), {end - begin}, DType::f32, begin);
    const double squares = optim::sum_of_squares(mine);
    const double norm = std::sqrt(comm->all_reduce_scalar(squares, dist::ReduceOp::sum));
    const double coef = max_norm / (norm + 1e-6);  // torch's clip_grad_norm_ rule, as optim::clip
    if (max_norm > 0 && coef < 1.0 && end > begin) scale_(mine, static_cast<float>(coef));
    return norm;
  }

  // ZeRO-1, parameter half: every rank's updated shard to every rank.
  void zero_gather_parameters() {
    const Tensor& p = model->slab()->params;
    const int64_t n = model->slab()->numel(), begin = optimizer->shard_begin(), end = optimizer->shard_end();
    zero_shard.zero_();
    copy_floats(zero_shard, 0, p, begin, end - begin);
    comm->all_gather(zero_shard.data<float>(), zero_full.data<float>(), shard_size);
    copy_floats(p, 0, zero_full, 0, n);
  }

  // A sharded moment slab from every rank, as one (world_size * shard_size) tensor in slab layout.
  Tensor gather_shards(const Tensor& shard) {
    const int64_t count = optimizer->shard_end() - optimizer->shard_begin();
    zero_shard.zero_();
    copy_floats(zero_shard, 0, shard, 0, count);
    Tensor full = Tensor::empty({shard_size * comm->world_size()}, DType::f32, device);
    comm->all_gather(zero_shard.data<float>(), full.data<float>(), shard_size);
    return full;
  }

  // n floats from src's storage at element src_at to dst's at dst_at (both f32, same device or not).
  static void copy_floats(const Tensor& dst, int64_t dst_at, const Tensor& src, int64_t src_at, int64_t n) {
    if (n <= 0) return;
    copy_bytes(dst.data<float>() + dst_at, dst.device(), src.data<float>() + src_at, src.device(),
               static_cast<std::size_t>(n) * sizeof(float));
  }

  // The moments by name in the checkpoint's layout, whatever the sharding, so that a run resumes
  // on any number of ranks.
  io::NamedTensors optimizer_moments() {
    io::NamedTensors moments;
    if (!optimizer->sharded()) {
      const auto state = optimizer->state();
      for (const auto& [name, t] : state.exp_avg) moments.emplace_back("exp_avg." + name, t);
      for (const auto& [name, t] : state.exp_avg_sq) moments.emplace_back("exp_avg_sq." + name, t);
      return moments;
    }
    const Tensor m = gather_shards(optimizer->exp_avg_slab()), v = gather_shards(optimizer->exp_avg_sq_slab());
    for (const auto& e : model->slab()->entries)
      moments.emplace_back("exp_avg." + e.name, Tensor::view_of(m.storage(), e.param.shape(), DType::f32, e.offset));
    for (const auto& e : model->slab()->entries)
      moments.emplace_back("exp_avg_sq." + e.name, Tensor::view_of(v.storage(), e.param.shape(), DType::f32, e.offset));
    return moments;
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

  // Every rank calls this (a sharded optimizer's moments are gathered); rank 0 alone writes.
  void write_checkpoint(const fs::path& target) {
    const io::NamedTensors moments = optimizer_moments();
    if (!is_root()) return;
    io::AtomicDir dir(target);
    io::write_model_files(*model, dir.path());
    io::write_safetensors(dir.path() / kOptimizerFile, moments,
                          {{"step", std::to_string(optimizer->step_count())}});
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
    if (!is_root()) return;
    auto all = complete_checkpoints();
    const auto keep = static_cast<std::size_t>(config.checkpoint.keep_last);
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
    const nn::GPTConfig& have = loaded->config();
    const nn::GPTConfig& want = model->config();
    LMF_CHECK(have.n_layer == want.n_layer && have.n_head == want.n_head && have.n_embd == want.n_embd &&
                  have.block_size == want.block_size && have.vocab_size == want.vocab_size,
              "resume: ", dir.string(), " holds a model of a different shape (n_layer ", have.n_layer, ", n_head ",
              have.n_head, ", n_embd ", have.n_embd, ", positions ", have.block_size, ", vocab ", have.vocab_size,
              ") than this config; use checkpoint.resume: never or another run.out_dir");
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

  // Model FLOPs utilisation at `tokens_per_sec` (all ranks together) against every rank's peak.
  double mfu_of(double tokens_per_sec) const {
    return peak_flops > 0 ? tokens_per_sec * flops_per_token / (peak_flops * comm->world_size()) : 0.0;
  }

  void log_json(const json& j) {
    if (!metrics.is_open()) return;  // ranks other than 0 log nothing
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
    const ComputeScope scope(compute);
    LMF_CHECK(val_loader, "evaluate: no validation data (data.val)");
    NoGradGuard no_grad;
    model->eval();
    val_loader->reset();
    const int64_t batches = std::min<int64_t>(config.eval.batches, std::max<int64_t>(1, val_loader->batches_per_epoch()));
    // The batch losses stay where they are computed and are read once at the end.
    Tensor losses = Tensor::empty({batches}, DType::f32, device);  // (batches)
    for (int64_t i = 0; i < batches; ++i) {
      const auto batch = upload->to_device(val_loader->next());
      slot(losses, i).copy_(model->forward(batch.inputs, batch.targets).loss);
    }
    model->train();
    double total = 0;
    for (float loss : losses.to_vector()) total += loss;
    // Each rank read its own slice of the validation batches; the mean of equal-sized means.
    return static_cast<float>(comm->all_reduce_scalar(total / batches, dist::ReduceOp::avg));
  }

  // Element i of a 1-D tensor, as a one-element view that can be written with copy_.
  static Tensor slot(const Tensor& t, int64_t i) {
    return Tensor::view_of(t.storage(), {}, t.dtype(), t.offset() + i);
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

  // Directories a killed run left half-written (AtomicDir's `*.tmp-*`, pruning's `*.deleting`):
  // never complete checkpoints, so removing them at start loses nothing.
  void remove_leftovers() const {
    if (!is_root()) return;
    for (const fs::path& dir : {out_dir, out_dir / "checkpoints"}) {
      if (!fs::is_directory(dir)) continue;
      std::vector<fs::path> stale;
      for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        const bool ours = name.rfind("step_", 0) == 0 || name.rfind("best.", 0) == 0 || name.rfind("final.", 0) == 0;
        if (entry.is_directory() && ours &&
            (name.find(".tmp-") != std::string::npos || name.ends_with(".deleting")))
          stale.push_back(entry.path());
      }
      for (const auto& path : stale) fs::remove_all(path);
    }
  }

  TrainResult fit() {
    const ComputeScope scope(compute);
    fs::create_directories(out_dir);
    remove_leftovers();
    bool resumed = false;
    if (config.checkpoint.resume == "auto") {
      // Rank 0's listing decides, so that every rank resumes the same step.
      std::string newest;
      if (is_root() && !complete_checkpoints().empty()) newest = complete_checkpoints().back().string();
      comm->broadcast_string(newest, 0);
      if (!newest.empty()) load_checkpoint(newest), resumed = true;
    } else if (config.checkpoint.resume != "never") {
      load_checkpoint(config.checkpoint.resume), resumed = true;
    }
    if (is_root()) {
      io::write_file_atomic(out_dir / "config.yaml", config.to_yaml());
      open_metrics(resumed);
    }
    Progress bar(is_root() ? config.logging.progress : "none", total_steps);
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
      if (t.max_time > 0 && agree_any(elapsed() >= t.max_time)) {
        result.stop_reason = "max_time";
        break;
      }
      const float lr = static_cast<float>(schedule.lr_at(step));
      model->zero_grad();
      // Each micro-batch's loss is kept where it was computed; the host reads them once, after the
      // step's last backward pass, so a GPU runs the micro-batches without waiting for the host.
      Tensor micro_losses = Tensor::empty({t.grad_accum_steps}, DType::f32, device);  // (grad_accum_steps)
      for (int64_t micro = 0; micro < t.grad_accum_steps; ++micro) {
        const auto batch = upload->to_device(train_loader->next());
        Tensor loss = model->forward(batch.inputs, batch.targets).loss;
        slot(micro_losses, micro).copy_(loss.detach());
        if (overlap_enabled() && micro == t.grad_accum_steps - 1) {
          begin_gradient_average();
          lmf::backward(scale(loss, inv_accum), Tensor(), [this](const Tensor& leaf) { on_grad_final(leaf); });
          finish_gradient_average();
        } else {
          scale(loss, inv_accum).backward();
        }
      }
      double loss_sum = 0;
      for (float l : micro_losses.to_vector()) loss_sum += l;
      // The mean over ranks of equal-sized means: the loss of the whole global batch, the same on
      // every rank, so that the NaN and spike guards decide alike everywhere.
      if (comm->world_size() > 1) loss_sum = comm->all_reduce_scalar(loss_sum, dist::ReduceOp::avg);
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
      } else if (zero_enabled()) {
        norm = zero_reduce_gradients(t.grad_clip);
        if (!std::isfinite(norm)) {
          LMF_CHECK(t.on_nan == "skip", "step ", step + 1, ": gradient norm is ", norm, "; stopping. Last good checkpoint: ",
                    last_checkpoint.empty() ? "none" : last_checkpoint);
          skipped = true;
          event("skip", "non-finite gradient norm");
        }
      } else {
        // The gradients were averaged over the ranks during the last backward pass.
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
        if (zero_enabled()) zero_gather_parameters();
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
        const double rate = dt > 0 ? tokens_since_log / dt : 0.0;
        StepMetrics m{step, loss, lr, norm, rate, mfu_of(rate), elapsed(), skipped};
        log_clock = now;
        tokens_since_log = 0;
        json line{{"step", m.step}, {"train_loss", m.train_loss}, {"lr", m.lr}, {"grad_norm", m.grad_norm},
                            {"tokens_per_sec", m.tokens_per_sec}, {"elapsed_s", m.elapsed_s}};
        if (m.mfu > 0) line["mfu"] = m.mfu;
        log_json(line);
        const double eta = total_steps > 0 && m.tokens_per_sec > 0
                               ? double(total_steps - step) * tokens_per_step / m.tokens_per_sec
                               : std::numeric_limits<double>::quiet_NaN();
        bar.step(step, loss, lr, norm, m.tokens_per_sec, m.mfu, m.elapsed_s, eta);
        if (callbacks.on_step && !callbacks.on_step(m)) stop = true, result.stop_reason = "callback";
      } else if (callbacks.on_step) {
        StepMetrics m{step, loss, lr, norm, 0.0, 0.0, elapsed(), skipped};
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
    // Not after a pause (signal, callback): an evaluation off the eval.interval grid would count
    // towards early stopping's patience, and the resumed run would stop earlier than an
    // uninterrupted one.
    const bool paused = result.stop_reason == "signal" || result.stop_reason == "callback";
    if (val_loader && !paused && result.stop_reason != "early_stop" &&
        (config.eval.interval == 0 || step % config.eval.interval != 0))
      run_evaluation();
    // A checkpoint of the last step, so resume: auto finds the run complete (or continues it).
    double need_last = is_root() && (complete_checkpoints().empty() ||
                                     complete_checkpoints().back().filename() != step_dir_name(step));
    if (comm->world_size() > 1) comm->broadcast_host(&need_last, sizeof need_last, 0);
    if (need_last > 0) save_periodic();
    if (result.stop_reason == "signal") event("interrupted", "stopped by signal after saving " + last_checkpoint);
    if (result.stop_reason == "early_stop" && config.early_stopping.restore_best && best_step >= 0) {
      if (is_root()) model->load_state_dict(io::load_gpt(out_dir / "best")->state_dict());
      if (comm->world_size() > 1) {
        Tensor params = model->param_slab();
        comm->broadcast(params, 0);
      }
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
