// ProgressBar (see progress.h).
#include "data/progress.h"

#include <unistd.h>

#include <cstdio>

namespace lmf::data {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      enabled_(enabled && ::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (enabled_ && !finished_) std::fputc('\n', stderr);
}

void ProgressBar::update(int64_t done) {
  done_ = done;
  draw(false);
}

void ProgressBar::finish() {
  if (finished_) return;
  draw(true);
  if (enabled_) std::fputc('\n', stderr);
  finished_ = true;
}

void ProgressBar::draw(bool force) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  double seconds = std::chrono::duration<double>(now - start_).count();
  double fraction = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  if (fraction > 1.0) fraction = 1.0;
  constexpr int kWidth = 30;
  int filled = static_cast<int>(fraction * kWidth);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(kWidth - filled), '.');
  if (unit_ == "B") {
    double rate = seconds > 0 ? static_cast<double>(done_) / 1e6 / seconds : 0.0;
    std::fprintf(stderr, "\r%s [%s] %5.1f%% %.1f/%.1f MB %.1f MB/s %.0fs ", label_.c_str(),
                 bar.c_str(), fraction * 100, static_cast<double>(done_) / 1e6,
                 static_cast<double>(total_) / 1e6, rate, seconds);
  } else {
    std::fprintf(stderr, "\r%s [%s] %5.1f%% %lld/%lld %s %.0fs ", label_.c_str(), bar.c_str(),
                 fraction * 100, static_cast<long long>(done_), static_cast<long long>(total_),
                 unit_.c_str(), seconds);
  }
  std::fflush(stderr);
}

}  // namespace lmf::data
