// The training configuration: one YAML file parsed once into plain structs and validated completely
// before any work starts. Command-line overrides use the same dotted keys and the same checks.
// docs/config.md lists every key with its type, default and meaning.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "lmforge/data/loader.h"
#include "lmforge/optim/schedule.h"

namespace lmf::train {

/// Kinds of run.device. `automatic` is the CPU (docs/config.md says why).
enum class DeviceKind { automatic, cpu, cuda };

/// run.device as the library holds it: auto, cpu, cuda (the rank's GPU) or cuda:N.
struct DeviceSetting {
  DeviceKind kind = DeviceKind::automatic;
  int index = -1;  ///< cuda:N; -1 with kind cuda: no GPU named
  /// "auto", "cpu", "cuda", "cuda:N"; throws lmf::Error with the valid forms otherwise.
  static DeviceSetting parse(const std::string& text);
  /// The YAML spelling (the inverse of parse).
  std::string str() const;
  bool operator==(const DeviceSetting&) const = default;
};

/// Floating-point formats of run.precision and run.matmul_precision.
enum class Precision { fp32, bf16 };
/// training.on_nan: what a non-finite loss or gradient norm does.
enum class NanPolicy { stop, skip };
/// training.optimizer: AdamW for everything, or Muon for the hidden 2-D matrices and AdamW for the rest.
enum class OptimizerKind { adamw, muon };
/// training.loss: every target, or only the targets a chat dataset's loss mask marks (assistant turns).
enum class LossTargets { all, assistant };
/// The metric early stopping watches.
enum class EarlyStoppingMetric { val_loss };
/// checkpoint.resume: the newest checkpoint of run.out_dir, none, or one named directory.
enum class ResumeMode { automatic, never, path };
/// distributed.backend.
enum class CommBackend { automatic, none, mpi, nccl };
/// logging.progress: `automatic` draws a bar on a terminal and plain lines otherwise.
enum class ProgressMode { automatic, bar, plain, none };

/// The YAML spelling of each kind ("auto", "fp32", "cosine", ...), as docs/config.md lists them.
std::string to_string(DeviceKind kind);
std::string to_string(Precision precision);
std::string to_string(NanPolicy policy);
std::string to_string(OptimizerKind kind);
std::string to_string(LossTargets targets);
std::string to_string(EarlyStoppingMetric metric);
std::string to_string(CommBackend backend);
std::string to_string(ProgressMode mode);

struct RunConfig {
  std::string name = "run";
  std::string out_dir = "runs/run";
  uint64_t seed = 1337;
  DeviceSetting device;                          ///< auto | cpu | cuda | cuda:N
  Precision precision = Precision::fp32;         ///< parameters and activations
  Precision matmul_precision = Precision::fp32;  ///< operands of CPU matrix products
  int threads = 0;                               ///< 0: every available core
  /// Capture the optimizer step as a CUDA graph after warm-up steps and replay it. Refused for
  /// now with a message saying why (the step still reads values back to the host); see docs/gpu.md.
  bool cuda_graph = false;
};

struct DataConfig {
  std::string train;                 ///< token shard, shard glob, or directory with train.bin
  std::string val;                   ///< token shard; empty: no validation
  std::string tokenizer;             ///< tokenizer spec; empty: <dir of train>/tokenizer.json if present
  data::LoaderOrder order = data::LoaderOrder::random;
};

/// model.arch: the decoder built by model.init: scratch (a directory's config.json names its own).
enum class ModelArch { gpt2, llama };

struct ModelConfig {
  std::string init = "scratch";  ///< scratch | checkpoint directory | Hugging Face directory (GPT-2, Llama family)
  ModelArch arch = ModelArch::gpt2;
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_embd = 128;
  int64_t block_size = 64;
  int64_t vocab_size = 0;  ///< 0: from the tokenizer (or the init checkpoint)
  float dropout = 0.f;
  bool bias = true;          ///< gpt2 only
  // llama only (docs/config.md):
  int64_t n_kv_head = 0;     ///< K/V heads (grouped-query); 0: n_head
  int64_t head_dim = 0;      ///< 0: n_embd / n_head
  int64_t intermediate_size = 0;  ///< SwiGLU width; 0: 8/3 n_embd rounded up to a multiple of 32
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool tie_embeddings = false;
  bool qkv_bias = false;     ///< biases on q/k/v_proj (Qwen2-style)
  bool qk_norm = false;      ///< RMSNorm of each q and k head (Qwen3-style)
};

struct TrainingConfig {
  int64_t batch_size = 12;
  int64_t grad_accum_steps = 1;
  int64_t max_steps = 0;   ///< at least one of max_steps, max_tokens, max_time must be set
  int64_t max_tokens = 0;
  double max_time = 0;     ///< seconds
  float lr = 1e-3f;
  float min_lr = 1e-4f;
  int64_t warmup_steps = 100;
  optim::ScheduleKind schedule = optim::ScheduleKind::cosine;
  std::array<float, 2> betas = {0.9f, 0.99f};
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;           ///< 0: no clipping
  OptimizerKind optimizer = OptimizerKind::adamw;
  float muon_lr = 0.02f;            ///< Muon group's peak lr (the schedule scales it by lr_at(step) / lr)
  float muon_momentum = 0.95f;
  float muon_weight_decay = 0.f;
  int muon_ns_steps = 5;
  NanPolicy on_nan = NanPolicy::stop;
  /// assistant needs a dataset with loss masks (`prepare --format chat`).
  LossTargets loss = LossTargets::all;
  float spike_zscore = 0.f;         ///< 0: off; skip an update whose loss z-score exceeds this
};

struct EvalConfig {
  int64_t interval = 250;  ///< steps; 0: only at the end
  int64_t batches = 20;
  /// Multiple-choice task files (JSONL, lmforge/train/task_eval.h) scored at every evaluation.
  std::vector<std::string> tasks;
  /// A text file whose bits-per-byte is measured at every evaluation; empty: none.
  std::string text;
};

struct EarlyStoppingConfig {
  bool enabled = false;
  EarlyStoppingMetric metric = EarlyStoppingMetric::val_loss;
  int64_t patience = 5;  ///< evaluations without improvement before stopping
  float min_delta = 0.f;
  bool restore_best = true;
};

struct CheckpointConfig {
  int64_t interval = 500;     ///< steps; 0: only best and final
  int64_t keep_last = 2;
  ResumeMode resume = ResumeMode::automatic;
  std::string resume_path;  ///< the checkpoint directory when resume is ResumeMode::path
  /// With resume never: set an earlier run's files in out_dir aside (moved to a timestamped
  /// sibling directory) instead of refusing to start. `lmforge train --force` sets it.
  bool force_fresh = false;
};

struct LoraConfig {
  int64_t rank = 0;  ///< 0: no LoRA
  float alpha = 16.f;
  float dropout = 0.f;
  /// Linear names inside a layer (the model's lora_target_names(), or a unique last component such
  /// as "q_proj"); empty: every target of the model.
  std::vector<std::string> targets;
};

struct FinetuneConfig {
  std::vector<std::string> freeze;  ///< parameter name patterns (* wildcards)
  LoraConfig lora;
};

struct DistributedConfig {
  CommBackend backend = CommBackend::automatic;
  int zero = 0;                  ///< 0 | 1
  double timeout = 300;          ///< seconds any one collective may wait before the run fails
};

struct LoggingConfig {
  int64_t interval = 10;
  ProgressMode progress = ProgressMode::automatic;
  double peak_gflops = 0;         ///< MFU reference per process; 0: measured at start on a CPU
};

struct Config {
  RunConfig run;
  DataConfig data;
  ModelConfig model;
  TrainingConfig training;
  EvalConfig eval;
  EarlyStoppingConfig early_stopping;
  CheckpointConfig checkpoint;
  FinetuneConfig finetune;
  DistributedConfig distributed;
  LoggingConfig logging;

  /// Parses a YAML file and applies `overrides` ("training.lr=3e-4"). Every problem is an
  /// lmf::Error naming the file, the key and its line: unknown keys (with the closest valid key),
  /// wrong types, out-of-range values, inconsistent settings.
  static Config load(const std::string& path, const std::vector<std::string>& overrides = {});
  /// Parses YAML text (the same checks; `source` names it in errors).
  static Config parse(const std::string& yaml, const std::string& source,
                      const std::vector<std::string>& overrides = {});
  /// Cross-field checks (also run by load/parse).
  void validate() const;
  /// The resolved configuration as YAML (saved in the run directory; parse() reads it back).
  std::string to_yaml() const;
  /// Every valid dotted key, in documentation order.
  static std::vector<std::string> keys();
};

}  // namespace lmf::train
