// Progress bar and plain progress lines on stderr (stdout stays free for a program's output).
#include "train/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace lmf::train {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

static std::string format_rate(double tokens_per_sec) {
  if (tokens_per_sec >= 1e6) return fmt::format("{:.2f}M tok/s", tokens_per_sec / 1e6);
  if (tokens_per_sec >= 1e3) return fmt::format("{:.1f}k tok/s", tokens_per_sec / 1e3);
  return fmt::format("{:.0f} tok/s", tokens_per_sec);
}

Progress::Progress(const std::string& mode, int64_t total_steps) : total_(total_steps) {
  if (mode == "none") {
    mode_ = Mode::none;
  } else if (mode == "plain") {
    mode_ = Mode::plain;
  } else if (mode == "bar") {
    mode_ = Mode::bar;
  } else {
    mode_ = isatty(fileno(stderr)) ? Mode::bar : Mode::plain;
  }
}

Progress::~Progress() {
  if (bar_drawn_) std::fputc('\n', stderr);
}

void Progress::clear_bar() {
  if (bar_drawn_) {
    std::fputs("\r\033[2K", stderr);
    bar_drawn_ = false;
  }
}

void Progress::step(int64_t step, float loss, float lr, double grad_norm, double tokens_per_sec, double mfu,
                    double elapsed_s, double eta_s) {
  const std::string total = total_ > 0 ? fmt::format("/{}", total_) : "";
  const std::string rate = format_rate(tokens_per_sec) + (mfu > 0 ? fmt::format(" | MFU {:.0f}%", 100 * mfu) : "");
  if (mode_ == Mode::plain) {
    std::fprintf(stderr, "%s\n",
                 fmt::format("step {}{} | loss {:.4f} | lr {:.2e} | grad norm {:.3f} | {} | {}",
                             step, total, loss, lr, grad_norm, rate, format_duration(elapsed_s)).c_str());
  } else if (mode_ == Mode::bar) {
    std::string bar;
    if (total_ > 0) {
      const int width = 24;
      const int filled = static_cast<int>(width * std::min<double>(1.0, double(step) / total_));
      bar = fmt::format("[{:#<{}}{:.<{}}] ", "", filled, "", width - filled);
    }
    std::fprintf(stderr, "\r\033[2K%s", fmt::format("{}step {}{} | loss {:.4f} | lr {:.2e} | {} | ETA {}",
                                                    bar, step, total, loss, lr, rate,
                                                    format_duration(eta_s)).c_str());
    bar_drawn_ = true;
  }
  std::fflush(stderr);
}

void Progress::message(const std::string& line) {
  if (mode_ == Mode::none) return;
  clear_bar();
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace lmf::train
