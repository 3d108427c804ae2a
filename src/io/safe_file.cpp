// Regular-file inputs, exclusive atomic outputs, bounded message values and checked integers (see
// safe_file.h). Every reader and writer of user paths goes through here so the rules hold
// everywhere at once.
#include "io/safe_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <random>

#include "lmforge/core/error.h"

namespace lmf::io {

namespace fs = std::filesystem;

std::string clip(std::string_view text, std::size_t max) {
  std::size_t cut = text.size();
  if (cut > max) {
    cut = max;
    // Back off continuation bytes so a multi-byte character is never split.
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  }
  // Control bytes (a NUL would end the message early, a newline would split the line) become '?'.
  std::string out(text.substr(0, cut));
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return cut == text.size() ? out : str(out, "... (", text.size(), " bytes)");
}

namespace {

std::string name_of(const fs::path& path, const std::string& what) {
  return what.empty() ? str("'", clip(path.string()), "'") : what;
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

int open_regular_file(const fs::path& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  LMF_CHECK(fd >= 0, name_of(path, what), ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const mode_t mode = st.st_mode;
    ::close(fd);
    throw Error(str(name_of(path, what), ": is ", kind_of(mode), "; only regular files are read"));
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

void require_regular_file(const fs::path& path, const std::string& what) {
  struct stat st {};
  LMF_CHECK(::stat(path.c_str(), &st) == 0, name_of(path, what), ": cannot open: ",
            std::strerror(errno));
  LMF_CHECK(S_ISREG(st.st_mode), name_of(path, what), ": is ", kind_of(st.st_mode),
            "; only regular files are read");
}

std::string read_regular_file(const fs::path& path, std::uint64_t max_bytes,
                              const std::string& what) {
  const int fd = open_regular_file(path, what);
  struct stat st {};
  ::fstat(fd, &st);
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    throw Error(str(name_of(path, what), ": ", st.st_size, " bytes is larger than the ", max_bytes,
                    "-byte limit for this file"));
  }
  std::string out;
  out.reserve(static_cast<std::size_t>(st.st_size));
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw Error(str(name_of(path, what), ": cannot read: ", std::strerror(err)));
    }
    if (n == 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
    if (out.size() > max_bytes) {  // the file grew while being read
      ::close(fd);
      throw Error(str(name_of(path, what), ": larger than the ", max_bytes, "-byte limit"));
    }
  }
  ::close(fd);
  return out;
}

// --- AtomicFile --------------------------------------------------------------------------------

AtomicFile::AtomicFile(fs::path target) : target_(std::move(target)) {
  LMF_CHECK(!target_.empty() && target_.has_filename(), "output path '", clip(target_.string()),
            "' does not name a file");
  std::random_device rd;
  std::mt19937_64 gen((static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
                      static_cast<std::uint64_t>(::getpid()));
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string suffix = ".tmp-";
    for (int i = 0; i < 10; ++i) suffix += kAlphabet[gen() % 36];
    fs::path tmp = target_;
    tmp += suffix;
    // O_EXCL|O_NOFOLLOW: an existing file or symlink at this name is never opened.
    fd_ = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd_ >= 0) {
      tmp_ = std::move(tmp);
      return;
    }
    if (errno != EEXIST && errno != ELOOP) break;
  }
  throw Error(str("'", clip(target_.string()), "': cannot create a temporary file beside it: ",
                  std::strerror(errno)));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, std::size_t size) {
  LMF_CHECK(fd_ >= 0, "'", clip(target_.string()), "': written after commit");
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, size);
    if (n < 0 && errno == EINTR) continue;
    LMF_CHECK(n > 0, "'", clip(target_.string()), "': write failed: ", std::strerror(errno));
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void AtomicFile::pwrite(const void* data, std::size_t size, std::uint64_t offset) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd_, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    LMF_CHECK(n > 0, "'", clip(target_.string()), "': write failed: ", std::strerror(errno));
    p += n;
    offset += static_cast<std::uint64_t>(n);
    size -= static_cast<std::size_t>(n);
  }
}

void AtomicFile::commit() {
  LMF_CHECK(fd_ >= 0, "'", clip(target_.string()), "': committed twice");
  LMF_CHECK(::fsync(fd_) == 0, "'", clip(target_.string()), "': fsync failed: ",
            std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0 || ::rename(tmp_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw Error(str("'", clip(target_.string()), "': cannot write: ", std::strerror(err)));
  }
  const fs::path dir = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {  // some filesystems refuse directory fsync; the rename already happened
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const fs::path& path, std::string_view bytes) {
  AtomicFile file(path);
  file.write(bytes);
  file.commit();
}

// --- paths -------------------------------------------------------------------------------------

bool path_within(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  fs::path a = fs::weakly_canonical(fs::absolute(inner, ec), ec);
  if (ec) a = fs::absolute(inner).lexically_normal();
  fs::path b = fs::weakly_canonical(fs::absolute(outer, ec), ec);
  if (ec) b = fs::absolute(outer).lexically_normal();
  // weakly_canonical keeps a trailing separator; compare component by component without it.
  auto ai = a.begin(), bi = b.begin();
  for (; bi != b.end(); ++bi) {
    if (bi->empty()) continue;
    while (ai != a.end() && ai->empty()) ++ai;
    if (ai == a.end() || *ai != *bi) return false;
    ++ai;
  }
  return true;
}

void check_replaceable_dir(const fs::path& dir, std::initializer_list<const char*> names,
                           const std::string& what) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(dir, ec);
  if (!fs::exists(status)) return;
  const std::string shown = clip(dir.string());
  LMF_CHECK(fs::is_directory(status), what, ": '", shown,
            "' exists and is not a directory lmforge wrote; refusing to replace it");
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    bool known = false;
    for (const char* n : names) known = known || name == n;
    LMF_CHECK(known && entry.is_regular_file() && !entry.is_symlink(), what, ": '", shown,
              "' holds '", clip(name, 80), "', which lmforge does not write there; refusing to "
              "replace the directory (choose a new or empty one)");
  }
  LMF_CHECK(!ec, what, ": cannot list '", shown, "': ", ec.message());
}

// --- numbers -----------------------------------------------------------------------------------

namespace {
bool decimal_syntax(std::string_view text, bool allow_minus) {
  std::size_t i = 0;
  if (allow_minus && !text.empty() && text[0] == '-') i = 1;
  if (i == text.size()) return false;
  if (text[i] == '0' && text.size() > i + 1) return false;  // "010" is not octal, nor decimal ten
  for (std::size_t k = i; k < text.size(); ++k)
    if (text[k] < '0' || text[k] > '9') return false;
  return true;
}
}  // namespace

std::int64_t parse_int_in_range(std::string_view text, std::int64_t low, std::int64_t high,
                                const std::string& what) {
  std::int64_t value = 0;
  const bool ok = decimal_syntax(text, low < 0) &&
                  std::from_chars(text.data(), text.data() + text.size(), value).ec == std::errc() &&
                  value >= low && value <= high;
  LMF_CHECK(ok, what, ": expected a decimal integer in [", low, ", ", high, "], got '", clip(text),
            "'");
  return value;
}

std::uint64_t parse_uint64(std::string_view text, const std::string& what) {
  std::uint64_t value = 0;
  const bool ok = decimal_syntax(text, false) &&
                  std::from_chars(text.data(), text.data() + text.size(), value).ec == std::errc();
  LMF_CHECK(ok, what, ": expected a decimal integer in [0, 2^64-1], got '", clip(text), "'");
  return value;
}

void check_thread_count(std::int64_t threads, const std::string& what) {
  LMF_CHECK(threads >= 0 && threads <= kMaxThreads, what, ": must be in [0, ", kMaxThreads,
            "] (0 = all cores), got ", threads);
}

}  // namespace lmf::io
