// Helpers for the tests that drive programs the way a user does (the lmforge binary, the examples,
// the reference scripts): scratch folders, shell quoting, whole-file reads and writes, and running
// a shell command line with its exit code, stdout and stderr captured.
#pragma once
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <random>
#include <string>
#include <system_error>
#include <vector>

namespace lmf::test {

/// A fresh folder PREFIX<random> under the system temporary directory, removed with its contents
/// when the object goes.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "lmf_test_") {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / (prefix + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

/// LMF_BINARY_DIR/test-data/GROUP/NAME, emptied and created; kept afterwards for inspection.
inline std::filesystem::path work_dir(const std::string& group, const std::string& name) {
  std::filesystem::path dir = std::filesystem::path(LMF_BINARY_DIR) / "test-data" / group / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// The whole file, byte for byte ("" if it cannot be opened).
inline std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

/// S in single quotes, for a shell command line (S must not contain a single quote).
inline std::string quote(const std::string& s) { return "'" + s + "'"; }

/// The exit code of a process from its wait status; -1 when it did not exit normally.
inline int exit_code(int wait_status) { return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1; }

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs COMMAND through the shell with stdout and stderr written to DIR/stdout.txt and
/// DIR/stderr.txt (stdin is inherited unless COMMAND redirects it).
inline RunResult run(const std::string& command, const std::filesystem::path& dir) {
  const std::filesystem::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string line = command + " >" + quote(out.string()) + " 2>" + quote(err.string());
  RunResult r;
  r.exit_code = exit_code(std::system(line.c_str()));
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

/// Runs COMMAND through the shell with stderr merged into stdout; the combined text is in `out`.
inline RunResult run_merged(const std::string& command) {
  RunResult r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe)) r.out += buffer;
  r.exit_code = exit_code(pclose(pipe));
  return r;
}

/// `lmforge ARGS` with stdin from /dev/null, outputs captured in DIR.
inline RunResult lmforge(const std::filesystem::path& dir, const std::string& args) {
  return run(quote(LMF_CLI) + " " + args + " < /dev/null", dir);
}

/// A command-line failure as lmforge reports it: a non-zero exit and exactly one stderr line,
/// "lmforge: error: ...", containing every one of NEEDLES.
inline void require_clean_error(const RunResult& r, std::initializer_list<std::string> needles) {
  INFO("stderr: " << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.err.rfind("lmforge: error: ", 0) == 0);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  for (const auto& needle : needles) CHECK(r.err.find(needle) != std::string::npos);
}

inline void require_clean_error(const RunResult& r, const std::string& needle) {
  require_clean_error(r, {needle});
}

/// A command that must succeed; its stderr is shown when it did not.
inline void require_ok(const RunResult& r) {
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
}

}  // namespace lmf::test
