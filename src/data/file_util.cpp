// File helpers of the data pipeline (see file_util.h).
#include "data/file_util.h"

#include <cerrno>
#include <cstring>

#include <unistd.h>

#include "io/safe_file.h"
#include "lmforge/core/error.h"

namespace lmf::data {

std::string last_error() { return std::strerror(errno); }

File::File(const std::string& path, const char* mode) : path_(path) {
  LMF_CHECK(mode[0] == 'r', "'", path, "': data::File opens inputs only");
  const int fd = io::open_regular_file(path);
  file_ = ::fdopen(fd, mode);
  if (file_ == nullptr) {
    const std::string reason = last_error();
    ::close(fd);
    throw Error(str("cannot open '", io::clip(path), "': ", reason));
  }
}

File::~File() {
  if (file_ != nullptr) std::fclose(file_);
}

void File::close() {
  if (file_ == nullptr) return;
  int rc = std::fclose(file_);
  file_ = nullptr;
  LMF_CHECK(rc == 0, "cannot write '", path_, "': ", last_error());
}

std::string read_file(const std::string& path) { return io::read_regular_file(path); }

void write_file_atomic(const std::string& path, std::string_view bytes) {
  io::write_file_atomic(path, bytes);
}

}  // namespace lmf::data
