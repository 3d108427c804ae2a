// metrics.jsonl and the progress line. The file is written with whole-line write(2) calls on an
// O_APPEND descriptor: a failed or short write is cut back to the last whole line with ftruncate,
// so a full disk never leaves a torn line in the middle of the file, and the line is kept for the
// next write instead of being lost.
#include "lmforge/train/run_log.h"

#include "io/safe_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lmforge/core/error.h"
#include "train/progress.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lmf::train {
namespace {

// Lines kept for a later write while the file cannot be written (about 25 MB at most).
constexpr std::size_t kMaxPending = 100000;
// Deeper JSON is not ours; refusing it keeps a hostile line from exhausting the stack.
constexpr int kMaxDepth = 64;

int json_depth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

bool is_json_object(const std::string& line) {
  if (json_depth(line) > kMaxDepth) return false;
  const json j = json::parse(line, nullptr, false);
  return !j.is_discarded() && j.is_object();
}

// Writes all of `text` at the end of `fd`; false (errno set) on any failure.
bool write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

void warn_line(const std::string& text) { std::fprintf(stderr, "lmforge: warning: %s\n", text.c_str()); }

}  // namespace

std::vector<std::string> read_jsonl_lines(const fs::path& path, const std::function<void(const std::string&)>& warn,
                                          bool skip_damaged) {
  std::ifstream in(path, std::ios::binary);
  LMF_CHECK(in, "cannot read ", path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::vector<std::string> lines;
  std::size_t begin = 0;
  int64_t line_no = 0;
  while (begin < text.size()) {
    const std::size_t end = text.find('\n', begin);
    ++line_no;
    const bool complete = end != std::string::npos;
    std::string line = text.substr(begin, complete ? end - begin : std::string::npos);
    begin = complete ? end + 1 : text.size();
    const bool last = begin >= text.size();
    if (line.empty()) continue;
    if (!complete || !is_json_object(line)) {
      // Only the last line can be torn by an interrupted write; anything else is damage.
      LMF_CHECK(last || skip_damaged, path.string(), ":", line_no, ": not a JSON object");
      if (warn)
        warn(fmt::format("{}:{}: skipping a {} ({})", path.string(), line_no, last ? "torn last line" : "damaged line",
                         complete ? "not a JSON object" : "no newline"));
      continue;
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

struct RunLog::Impl {
  RunLogOptions options;
  std::unique_ptr<Progress> progress;
  int fd = -1;
  off_t good_size = 0;               // bytes of whole lines in the file
  std::deque<std::string> pending;   // lines (with newline) not written yet
  bool failing = false;              // the last write failed (warned once per episode)
  int64_t dropped = 0;

  ~Impl() {
    if (fd >= 0) ::close(fd);
  }

  void flush_pending() {
    while (!pending.empty()) {
      if (!write_all(fd, pending.front())) {
        const int error = errno;
        // Cut a partial line back off, so the file ends at a line boundary.
        if (::ftruncate(fd, good_size) != 0) {
          // Nothing more to do: the next successful write starts a line after the fragment.
        }
        if (!failing)
          warn_line(fmt::format("cannot write {} ({}); its lines are kept and written with the next one",
                                options.metrics_path.string(), std::strerror(error)));
        failing = true;
        return;
      }
      good_size += static_cast<off_t>(pending.front().size());
      pending.pop_front();
    }
    if (failing) {
      warn_line(fmt::format("{} is written again{}", options.metrics_path.string(),
                            dropped > 0 ? fmt::format(" ({} older lines were lost)", dropped) : std::string()));
      failing = false;
      dropped = 0;
    }
  }
};

RunLog::RunLog(RunLogOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->progress = std::make_unique<Progress>(to_string(impl_->options.progress), impl_->options.total_steps);
}

RunLog::~RunLog() = default;

void RunLog::open(int64_t resumed_step) {
  const fs::path& path = impl_->options.metrics_path;
  if (path.empty()) return;
  std::string kept;
  if (resumed_step >= 0 && fs::exists(path)) {
    // Entries past the resumed step came from work that was lost; drop them.
    for (const auto& line : read_jsonl_lines(path, warn_line, /*skip_damaged=*/true)) {
      const json j = json::parse(line, nullptr, false);
      const json step = j.value("step", json(0));
      if (!step.is_number_integer() || step.get<int64_t>() <= resumed_step) kept += line + '\n';
    }
  }
  // The kept lines as a fresh file through the shared atomic writer (a unique O_EXCL|O_NOFOLLOW
  // temporary renamed over the old one): a symlink planted at the name is replaced, never followed.
  io::write_file_atomic(path, kept);
  if (impl_->fd >= 0) ::close(impl_->fd);
  impl_->fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
  LMF_CHECK(impl_->fd >= 0, "cannot write ", path.string(), " (", std::strerror(errno), ")");
  impl_->good_size = static_cast<off_t>(kept.size());
}

void RunLog::write_line(const std::string& json_object) {
  if (impl_->fd < 0) return;  // ranks other than 0 log nothing
  if (impl_->pending.size() >= kMaxPending) impl_->pending.pop_front(), ++impl_->dropped;
  impl_->pending.push_back(json_object + '\n');
  impl_->flush_pending();
}

int64_t RunLog::pending_lines() const { return static_cast<int64_t>(impl_->pending.size()); }

double RunLog::mfu(double tokens_per_sec) const {
  const auto& o = impl_->options;
  return o.peak_flops > 0 ? tokens_per_sec * o.flops_per_token / (o.peak_flops * o.world_size) : 0.0;
}

void RunLog::log_step(const StepMetrics& m) {
  json line{{"step", m.step}, {"train_loss", m.train_loss}, {"lr", m.lr}, {"grad_norm", m.grad_norm},
            {"tokens_per_sec", m.tokens_per_sec}, {"elapsed_s", m.elapsed_s}};
  if (m.mfu > 0) line["mfu"] = m.mfu;
  write_line(line.dump());
  const auto& o = impl_->options;
  const double eta = o.total_steps > 0 && m.tokens_per_sec > 0
                         ? double(o.total_steps - m.step) * double(o.tokens_per_step) / m.tokens_per_sec
                         : std::numeric_limits<double>::quiet_NaN();
  impl_->progress->step(m.step, m.train_loss, m.lr, m.grad_norm, m.tokens_per_sec, m.mfu, m.elapsed_s, eta);
}

void RunLog::log_eval(int64_t step, float val_loss, double elapsed_s, bool best) {
  write_line(json{{"step", step}, {"val_loss", val_loss}, {"elapsed_s", elapsed_s}}.dump());
  message(fmt::format("step {} | val_loss {:.4f}{}", step, val_loss, best ? " (best)" : ""));
}

void RunLog::log_event(int64_t step, const std::string& name, const std::string& detail, double elapsed_s) {
  write_line(json{{"step", step}, {"event", name}, {"detail", detail}, {"elapsed_s", elapsed_s}}.dump());
  message(fmt::format("step {} | {}: {}", step, name, detail));
}

void RunLog::message(const std::string& line) { impl_->progress->message(line); }

}  // namespace lmf::train
