// `lmforge plot RUN_DIR [--output FILE]`: draws train and validation loss against step from
// RUN_DIR/metrics.jsonl with gnuplot (PNG or SVG by the output's extension). No text from the
// user or the metrics file ever reaches the gnuplot script: the data files and the image live in a
// private temporary directory under fixed names, the title is reduced to safe characters, and the
// image is then copied to --output through an atomic write.
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "cli/commands.h"
#include "io/safe_file.h"
#include "io/untrusted_json.h"
#include "lmforge/core/error.h"

namespace fs = std::filesystem;

namespace lmf::cli {
namespace {

// A metrics file is a few megabytes even for long runs; a gigabyte is not one.
constexpr std::uint64_t kMaxMetricsBytes = 1ull << 30;

// A private directory (mkdtemp, mode 0700) removed with its contents on scope exit.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "lmforge-plot-XXXXXX").string();
    LMF_CHECK(::mkdtemp(pattern.data()) != nullptr, "cannot create a temporary directory for gnuplot");
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Letters, digits and a few punctuation marks; everything else (quotes, newlines, backslashes,
// '@', '$', '`') becomes '?', so the title cannot end its string or start a command.
std::string safe_title(const std::string& name) {
  std::string out;
  for (const char c : io::clip(name, 80)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.' || c == ' ' || c == '+' || c == ',' || c == '(' ||
                    c == ')';
    out += ok ? c : '?';
  }
  return out;
}

// Runs gnuplot in `dir` (no shell: no path is ever parsed as a command) with `script` on its
// standard input; returns its wait status, or -1 when it could not be started.
int run_gnuplot(const fs::path& dir, const std::string& script) {
  int fds[2];
  LMF_CHECK(::pipe(fds) == 0, "cannot start gnuplot: ", std::strerror(errno));
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  LMF_CHECK(pid >= 0, "cannot start gnuplot: ", std::strerror(errno));
  if (pid == 0) {
    ::dup2(fds[0], 0);
    ::dup2(2, 1);  // gnuplot's chatter goes to stderr, stdout carries only the output path
    ::close(fds[0]);
    ::close(fds[1]);
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execlp("gnuplot", "gnuplot", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[0]);
  std::signal(SIGPIPE, SIG_IGN);
  const char* p = script.data();
  std::size_t left = script.size();
  while (left > 0) {
    const ssize_t n = ::write(fds[1], p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  ::close(fds[1]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

void plot(const fs::path& run_dir, fs::path output) {
  const fs::path metrics = run_dir / "metrics.jsonl";
  std::error_code ec;
  LMF_CHECK(fs::exists(metrics, ec), "cannot read '", io::clip(metrics.string()), "' (is '",
            io::clip(run_dir.string()), "' a run directory?)");
  const std::string text = io::read_regular_file(metrics, kMaxMetricsBytes);
  if (output.empty()) output = run_dir / "loss.png";
  const std::string ext = output.extension().string();
  LMF_CHECK(ext == ".png" || ext == ".svg", "--output: '", io::clip(output.string()),
            "' must end in .png or .svg");

  // Only numbers reach the data files; a line that is not a JSON object is an error, except a
  // torn last line (a run killed mid-write), which is skipped with a warning.
  std::ostringstream train_data, val_data;
  int64_t line_no = 0, train_points = 0, val_points = 0;
  std::istringstream lines(text);
  const bool ends_cleanly = text.empty() || text.back() == '\n';
  for (std::string line; std::getline(lines, line);) {
    ++line_no;
    const bool last = lines.peek() == EOF;
    const auto j = io::try_parse_untrusted_json(line);
    if (j.is_discarded() || !j.is_object()) {
      if (last && !ends_cleanly) {
        std::fprintf(stderr, "lmforge plot: warning: %s:%lld: skipping a torn last line\n",
                     io::clip(metrics.string()).c_str(), static_cast<long long>(line_no));
        break;
      }
      throw Error(str(io::clip(metrics.string()), ":", line_no, ": not a JSON object"));
    }
    auto point = [&](const char* key, std::ostringstream& out, int64_t& count) {
      if (!j.contains(key) || !j.contains("step")) return;
      const auto &step = j["step"], &value = j[key];
      LMF_CHECK(step.is_number() && value.is_number(), io::clip(metrics.string()), ":", line_no,
                ": \"step\" and \"", key, "\" must be numbers");
      out << step.get<double>() << ' ' << value.get<double>() << '\n';
      ++count;
    };
    point("train_loss", train_data, train_points);
    point("val_loss", val_data, val_points);
  }
  LMF_CHECK(train_points + val_points > 0, io::clip(metrics.string()), ": no losses to plot yet");

  ScratchDir scratch;
  const fs::path image = scratch.path / ("plot" + ext);
  io::write_file_atomic(scratch.path / "train.dat", train_data.str());
  io::write_file_atomic(scratch.path / "val.dat", val_data.str());

  // The script names files relative to the scratch directory, which gnuplot is started in.
  std::string script = ext == ".png" ? "set terminal pngcairo size 900,540\n" : "set terminal svg size 900,540\n";
  script += "set output 'plot" + ext + "'\nset xlabel 'step'\nset ylabel 'loss'\nset grid\n";
  // noenhanced: run names such as fortunes_finetune must not turn '_' into a subscript.
  const fs::path name = run_dir.has_filename() ? run_dir.filename() : run_dir.parent_path().filename();
  script += "set title 'lmforge: " + safe_title(name.string()) + "' noenhanced\nplot ";
  if (train_points) script += "'train.dat' using 1:2 with lines title 'train'";
  if (train_points && val_points) script += ", ";
  if (val_points) script += "'val.dat' using 1:2 with linespoints title 'validation'";
  script += "\n";

  const int status = run_gnuplot(scratch.path, script);
  LMF_CHECK(status == 0 && fs::is_regular_file(image, ec), "gnuplot failed (exit status ", status,
            "); is gnuplot-nox installed?");
  io::write_file_atomic(output, io::read_regular_file(image));
  std::printf("%s\n", output.string().c_str());
}

}  // namespace

void add_plot_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("plot", "Plot train and validation loss of a run (PNG or SVG, via gnuplot)");
  auto run_dir = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  cmd->add_option("run_dir", *run_dir, "Run directory holding metrics.jsonl")->required();
  cmd->add_option("-o,--output", *output, "Output file (.png or .svg); default RUN_DIR/loss.png");
  cmd->callback([run_dir, output] { plot(*run_dir, *output); });
}

}  // namespace lmf::cli
