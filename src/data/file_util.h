// Small file helpers shared by the data pipeline: whole-file reads with errors that name the file,
// and atomic writes (temporary name + rename) so a crash never leaves a half-written output.
#pragma once
#include <cstdio>
#include <string>
#include <string_view>

namespace lmf::data {

/// The whole file; throws lmf::Error naming the file when it cannot be opened or read, or is not a
/// regular file (io::read_regular_file).
std::string read_file(const std::string& path);
/// Writes `bytes` to `path` atomically (io::write_file_atomic: a unique exclusive temporary file,
/// then a rename).
void write_file_atomic(const std::string& path, std::string_view bytes);
/// strerror(errno) of the last failed call, for messages.
std::string last_error();

/// An owned FILE* that closes itself. Only reading modes: inputs must be regular files (checked
/// without blocking on a FIFO); outputs go through io::AtomicFile.
class File {
 public:
  File(const std::string& path, const char* mode);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  std::FILE* get() const { return file_; }
  const std::string& path() const { return path_; }
  /// Closes and reports a failed flush (a full disk) as an error naming the file.
  void close();

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
};

}  // namespace lmf::data
