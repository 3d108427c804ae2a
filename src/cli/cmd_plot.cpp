// `lmforge plot RUN_DIR [--output FILE]`: draws train and validation loss against step from
// RUN_DIR/metrics.jsonl with gnuplot (PNG or SVG by the output's extension).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "lmforge/core/error.h"
#include "lmforge/train/run_log.h"

namespace fs = std::filesystem;

namespace lmf::cli {
namespace {

void plot(const fs::path& run_dir, fs::path output) {
  const fs::path metrics = run_dir / "metrics.jsonl";
  LMF_CHECK(std::ifstream(metrics).good(), "cannot read ", metrics.string(), " (is '", run_dir.string(),
            "' a run directory?)");
  if (output.empty()) output = run_dir / "loss.png";
  const std::string ext = output.extension().string();
  LMF_CHECK(ext == ".png" || ext == ".svg", "--output: '", output.string(), "' must end in .png or .svg");

  // gnuplot reads two data files: train (step, loss) and validation (step, loss).
  const fs::path train_dat = output.string() + ".train.dat", val_dat = output.string() + ".val.dat";
  std::ofstream train_out(train_dat), val_out(val_dat);
  int64_t train_points = 0, val_points = 0;
  // A torn last line (a run killed mid-write, a full disk) is skipped with a warning.
  const auto warn = [](const std::string& w) { std::fprintf(stderr, "lmforge: warning: %s\n", w.c_str()); };
  for (const std::string& line : train::read_jsonl_lines(metrics, warn)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("train_loss")) train_out << j["step"] << ' ' << j["train_loss"] << '\n', ++train_points;
    if (j.contains("val_loss")) val_out << j["step"] << ' ' << j["val_loss"] << '\n', ++val_points;
  }
  train_out.close();
  val_out.close();
  LMF_CHECK(train_points + val_points > 0, metrics.string(), ": no losses to plot yet");

  std::string script = ext == ".png" ? "set terminal pngcairo size 900,540\n" : "set terminal svg size 900,540\n";
  script += "set output '" + output.string() + "'\nset xlabel 'step'\nset ylabel 'loss'\nset grid\n";
  // noenhanced: run names such as fortunes_finetune must not turn '_' into a subscript.
  const fs::path name = run_dir.has_filename() ? run_dir.filename() : run_dir.parent_path().filename();
  script += "set title 'lmforge: " + name.string() + "' noenhanced\nplot ";
  if (train_points) script += "'" + train_dat.string() + "' using 1:2 with lines title 'train'";
  if (train_points && val_points) script += ", ";
  if (val_points) script += "'" + val_dat.string() + "' using 1:2 with linespoints title 'validation'";
  script += "\n";

  FILE* gnuplot = popen("gnuplot 2>&1", "w");
  LMF_CHECK(gnuplot, "cannot start gnuplot (install the Debian package gnuplot-nox)");
  std::fputs(script.c_str(), gnuplot);
  const int status = pclose(gnuplot);
  fs::remove(train_dat);
  fs::remove(val_dat);
  LMF_CHECK(status == 0, "gnuplot failed (exit status ", status, "); is gnuplot-nox installed?");
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
