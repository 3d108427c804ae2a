// The one place where lmforge opens files it did not write and creates files it will keep. Inputs
// must be regular files (a FIFO or /dev/zero would block or never end), outputs appear whole or not
// at all under their final name, and no pre-planted symlink or file is ever followed or truncated.
#pragma once
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>

namespace lmf::io {

/// Longest quoted value (a path, a key, a shape) an error message repeats.
inline constexpr std::size_t kMaxMessageValue = 200;

/// `text` as is when short, else its first `max` bytes (cut on a UTF-8 boundary) and
/// "... (N bytes)", with control bytes shown as '?': a hostile value can never make an error line
/// unbounded, split it, or end it early with a NUL.
std::string clip(std::string_view text, std::size_t max = kMaxMessageValue);

/// Opens `path` read-only; throws lmf::Error naming `what` (or the path) unless it is a regular
/// file. The open itself does not block on a FIFO (O_NONBLOCK, cleared afterwards).
int open_regular_file(const std::filesystem::path& path, const std::string& what = "");

/// Throws unless `path` names a regular file (following symlinks), for inputs that another
/// library opens.
void require_regular_file(const std::filesystem::path& path, const std::string& what = "");

/// The whole regular file, refused when larger than `max_bytes`.
std::string read_regular_file(const std::filesystem::path& path,
                              std::uint64_t max_bytes = std::numeric_limits<std::uint64_t>::max(),
                              const std::string& what = "");

/// A new file beside `target` under a unique temporary name, created with O_EXCL|O_NOFOLLOW (so
/// nothing planted there is followed or reused). commit() fsyncs it and renames it over `target`
/// (a symlink at `target` is replaced, not followed); without commit() the destructor removes it.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  int fd() const { return fd_; }
  const std::filesystem::path& temp_path() const { return tmp_; }
  const std::filesystem::path& target() const { return target_; }
  /// Writes all of `size` bytes (retrying short writes); errors name the target.
  void write(const void* data, std::size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  /// Writes at an absolute offset (a header patched at the end).
  void pwrite(const void* data, std::size_t size, std::uint64_t offset);
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path tmp_;
  int fd_ = -1;
};

/// Writes `bytes` to `path` through an AtomicFile.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

/// Whether `inner` is `outer` or lies inside it, comparing canonical paths (symlinks resolved,
/// paths that do not exist yet resolved as far as they do).
bool path_within(const std::filesystem::path& inner, const std::filesystem::path& outer);

/// Throws unless `dir` is absent, or is a real directory (not a symlink) holding only regular
/// files named in `names`: the only directories lmforge replaces as a whole are ones it wrote.
/// `what` names the option in the message ("--out").
void check_replaceable_dir(const std::filesystem::path& dir, std::initializer_list<const char*> names,
                           const std::string& what);

/// Parses a non-negative or signed decimal integer in [low, high] from `text` (no sign for
/// unsigned ranges beyond int64, no leading '+', no spaces, no leading zeros except "0"); on
/// failure throws lmf::Error "<what>: expected an integer in [low, high], got '<text>'".
std::int64_t parse_int_in_range(std::string_view text, std::int64_t low, std::int64_t high,
                                const std::string& what);
std::uint64_t parse_uint64(std::string_view text, const std::string& what);

/// Largest thread count a setting may ask for: far above any real machine, far below what makes
/// the OpenMP runtime fail.
inline constexpr int kMaxThreads = 1024;
/// Throws "<what>: must be in [0, 1024] ..." for thread counts outside that range.
void check_thread_count(std::int64_t threads, const std::string& what);

}  // namespace lmf::io
