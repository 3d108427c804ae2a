// Progress output of a training run: a one-line bar redrawn in place on a terminal, plain lines
// otherwise (logs, CI), or nothing. Kept apart from the loop so the loop only reports numbers.
#pragma once
#include <cstdint>
#include <string>

namespace lmf::train {

class Progress {
 public:
  enum class Mode { bar, plain, none };
  /// "auto" picks bar when stderr is a terminal, plain otherwise.
  Progress(const std::string& mode, int64_t total_steps);
  ~Progress();

  /// mfu in 0..1, shown when > 0.
  void step(int64_t step, float loss, float lr, double grad_norm, double tokens_per_sec, double mfu,
            double elapsed_s, double eta_s);
  /// A line that must stay visible (evaluations, checkpoints, events).
  void message(const std::string& line);
  Mode mode() const { return mode_; }

 private:
  void clear_bar();
  Mode mode_;
  int64_t total_;
  bool bar_drawn_ = false;
};

/// "1h02m", "3m07s", "12s".
std::string format_duration(double seconds);

}  // namespace lmf::train
