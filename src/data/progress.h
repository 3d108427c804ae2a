// A one-line progress bar on stderr, drawn only when stderr is a terminal (so logs and pipes stay
// clean) and redrawn at most ten times a second so it costs nothing in hot loops.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace lmf::data {

class ProgressBar {
 public:
  /// `unit`: "B" shows sizes in MB and a MB/s rate; anything else shows counts.
  ProgressBar(std::string label, int64_t total, std::string unit, bool enabled = true);
  ~ProgressBar();
  void update(int64_t done);
  /// Draws the final state and ends the line.
  void finish();

 private:
  void draw(bool force);
  std::string label_;
  std::string unit_;
  int64_t total_;
  int64_t done_ = 0;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace lmf::data
