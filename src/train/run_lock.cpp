// RunLock: flock(2) on RUN/.lock. The lock belongs to the open file description, so it is gone
// when the process exits or is killed, and a second descriptor (another process, or another
// trainer in this one) cannot take it.
#include "lmforge/train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "lmforge/core/error.h"

namespace fs = std::filesystem;

namespace lmf::train {

fs::path RunLock::lock_file(const fs::path& run_dir) { return run_dir / ".lock"; }

RunLock::RunLock(const fs::path& run_dir) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  LMF_CHECK(!ec, "run.out_dir: cannot create '", run_dir.string(), "' (", ec.message(), ")");
  const fs::path path = lock_file(run_dir);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  LMF_CHECK(fd_ >= 0, "run.out_dir: cannot open the lock file ", path.string(), " (", std::strerror(errno), ")");
  int rc;
  do {
    rc = ::flock(fd_, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int error = errno;
    ::close(fd_);
    fd_ = -1;
    if (error == EWOULDBLOCK)
      throw Error(str("run.out_dir: '", run_dir.string(), "' is in use by another training process (it holds ",
                      path.string(), "); wait for it to finish, or set another run.out_dir"));
    throw Error(str("run.out_dir: cannot lock ", path.string(), " (", std::strerror(error), ")"));
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

}  // namespace lmf::train
