// The training configuration: one YAML file parsed once into plain structs and validated completely
// before any work starts. Command-line overrides use the same dotted keys and the same checks.
// docs/config.md lists every key with its type, default and meaning.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace lmf::train {

struct RunConfig {
  std::string name = "run";
  std::string out_dir = "runs/run";
  uint64_t seed = 1337;
  std::string device = "auto";     ///< auto | cpu | cuda | cuda:N
  std::string precision = "fp32";  ///< fp32 | bf16
  std::string matmul_precision = "fp32";  ///< fp32 | bf16: operands of CPU matrix products
  int threads = 0;                 ///< 0: every available core
};

struct DataConfig {
  std::string train;                 ///< token shard, shard glob, or directory with train.bin
  std::string val;                   ///< token shard; empty: no validation
  std::string tokenizer;             ///< tokenizer spec; empty: <dir of train>/tokenizer.json if present
  std::string order = "random";      ///< random | sequential
};

struct ModelConfig {
  std::string init = "scratch";  ///< scratch | checkpoint directory | Hugging Face GPT-2 directory
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_embd = 128;
  int64_t block_size = 64;
  int64_t vocab_size = 0;  ///< 0: from the tokenizer (or the init checkpoint)
  float dropout = 0.f;
  bool bias = true;
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
  std::string schedule = "cosine";  ///< constant | cosine
  std::array<float, 2> betas = {0.9f, 0.99f};
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;           ///< 0: no clipping
  std::string on_nan = "stop";      ///< stop | skip
  float spike_zscore = 0.f;         ///< 0: off; skip an update whose loss z-score exceeds this
};

struct EvalConfig {
  int64_t interval = 250;  ///< steps; 0: only at the end
  int64_t batches = 20;
};

struct EarlyStoppingConfig {
  bool enabled = false;
  std::string metric = "val_loss";
  int64_t patience = 5;  ///< evaluations without improvement before stopping
  float min_delta = 0.f;
  bool restore_best = true;
};

struct CheckpointConfig {
  int64_t interval = 500;     ///< steps; 0: only best and final
  int64_t keep_last = 2;
  std::string resume = "auto";  ///< auto | never | PATH
};

struct LoraConfig {
  int64_t rank = 0;  ///< 0: no LoRA
  float alpha = 16.f;
  float dropout = 0.f;
  std::vector<std::string> targets = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
};

struct FinetuneConfig {
  std::vector<std::string> freeze;  ///< parameter name patterns (* wildcards)
  LoraConfig lora;
};

struct DistributedConfig {
  std::string backend = "auto";  ///< auto | none | mpi | nccl
  int zero = 0;                  ///< 0 | 1
  double timeout = 300;          ///< seconds any one collective may wait before the run fails
};

struct LoggingConfig {
  int64_t interval = 10;
  std::string progress = "auto";  ///< auto | bar | plain | none
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
