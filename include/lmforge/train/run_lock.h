// RunLock: an exclusive lock on a run directory, so that two training processes never write the
// same checkpoints and metrics. flock(2) on RUN/.lock: the kernel releases it when the process
// exits, however it exits, so a crash never leaves a stale lock.
#pragma once
#include <filesystem>

namespace lmf::train {

class RunLock {
 public:
  /// Creates `run_dir` if needed and locks it; throws lmf::Error naming the directory when another
  /// process holds the lock.
  explicit RunLock(const std::filesystem::path& run_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  /// The lock file (RUN/.lock).
  static std::filesystem::path lock_file(const std::filesystem::path& run_dir);

 private:
  int fd_ = -1;
};

}  // namespace lmf::train
