// RunLog: what a training run reports, as metrics.jsonl (one JSON object per line, for plots and
// tools) and as the progress line on stderr. A custom loop gets the same files and output as
// `lmforge train` by calling log_step / log_eval / log_event.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/train/config.h"

namespace lmf::train {

/// What one optimizer step reports.
struct StepMetrics {
  int64_t step = 0;              ///< optimizer steps completed
  float train_loss = 0;          ///< mean over the step's micro-batches
  float lr = 0;
  double grad_norm = 0;          ///< before clipping
  double tokens_per_sec = 0;     ///< over the last logging interval
  double mfu = 0;                ///< model FLOPs utilisation over the interval (0..1); 0 when unknown
  double elapsed_s = 0;          ///< wall time of this run (resumed runs continue the count)
  bool skipped = false;          ///< the update was skipped (NaN/Inf with on_nan: skip, or a spike)
};

struct RunLogOptions {
  /// metrics.jsonl to write; empty: no file (ranks other than 0).
  std::filesystem::path metrics_path;
  ProgressMode progress = ProgressMode::automatic;
  int64_t total_steps = 0;        ///< for the bar and the ETA; 0: unknown
  int64_t tokens_per_step = 0;    ///< for the ETA
  double flops_per_token = 0;     ///< model FLOPs per trained token (CausalLM::flops_per_token)
  double peak_flops = 0;          ///< per process; 0: no MFU
  int world_size = 1;             ///< processes the peak is multiplied by
};

/// The complete lines of a JSON-lines file. A last line without its newline or that is not JSON
/// (torn by a crash or a full disk) is skipped, and `warn` (if set) is told why; any other line
/// that is not a JSON object (or nests deeper than 64) is an lmf::Error naming the file and
/// line, unless `skip_damaged` says to skip it with a warning too.
std::vector<std::string> read_jsonl_lines(const std::filesystem::path& path,
                                          const std::function<void(const std::string&)>& warn = {},
                                          bool skip_damaged = false);

class RunLog {
 public:
  explicit RunLog(RunLogOptions options);
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  /// Opens metrics.jsonl: truncated for a fresh run; for a run resumed at `resumed_step`, the
  /// lines of steps after it (work that was lost) are dropped and the rest kept. No-op without a
  /// metrics_path.
  void open(int64_t resumed_step = -1);

  /// A "step" line: step, train_loss, lr, grad_norm, tokens_per_sec, elapsed_s (and mfu when
  /// known), and the progress bar with the ETA.
  void log_step(const StepMetrics& m);
  /// A "val_loss" line and a progress message; `best` marks a new best.
  void log_eval(int64_t step, float val_loss, double elapsed_s, bool best);
  /// An event line {"step", "event", "detail", "elapsed_s"} and a progress message.
  void log_event(int64_t step, const std::string& name, const std::string& detail, double elapsed_s);
  /// Appends one JSON object (a line of text without newline) to metrics.jsonl. A failed write
  /// (a full disk) leaves no partial line: the file is cut back to its last whole line, a warning
  /// is printed once, and the line waits to be written again by the next call (up to a bound);
  /// writes never throw.
  void write_line(const std::string& json_object);
  /// A line that must stay visible on the progress output.
  void message(const std::string& line);

  /// Model FLOPs utilisation of `tokens_per_sec` (all ranks together) against every rank's peak.
  double mfu(double tokens_per_sec) const;
  /// Lines that could not be written yet (0 when the file is healthy).
  int64_t pending_lines() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lmf::train
