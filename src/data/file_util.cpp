// File helpers of the data pipeline (see file_util.h).
#include "data/file_util.h"

#include <cerrno>
#include <cstring>

#include "lmforge/core/error.h"

namespace lmf::data {

std::string last_error() { return std::strerror(errno); }

File::File(const std::string& path, const char* mode) : path_(path) {
  file_ = std::fopen(path.c_str(), mode);
  LMF_CHECK(file_ != nullptr, "cannot open '", path, "': ", last_error());
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

std::string read_file(const std::string& path) {
  File file(path, "rb");
  std::string out;
  char buffer[1 << 16];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) out.append(buffer, n);
  LMF_CHECK(!std::ferror(file.get()), "cannot read '", path, "': ", last_error());
  return out;
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  std::string tmp = path + ".tmp";
  {
    File file(tmp, "wb");
    LMF_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), file.get()) == bytes.size(),
              "cannot write '", tmp, "': ", last_error());
    file.close();
  }
  LMF_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '", tmp, "' to '", path,
            "': ", last_error());
}

}  // namespace lmf::data
