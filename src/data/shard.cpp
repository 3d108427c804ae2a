// Shard writer and memory-mapped reader (see lmforge/data/shard.h for the layout). Every size in
// a header is checked against the file before any token is touched: shards come from outside.
#include "lmforge/data/shard.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "data/file_util.h"
#include "io/safe_file.h"
#include "lmforge/core/error.h"

namespace lmf::data {

namespace fs = std::filesystem;

TokenWidth token_width_for_vocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? TokenWidth::u16 : TokenWidth::u32;
}

std::size_t token_bytes(TokenWidth width) { return width == TokenWidth::u16 ? 2 : 4; }

namespace {

std::vector<int32_t> make_header(TokenWidth width, int64_t count) {
  std::vector<int32_t> header(kShardHeaderInts, 0);
  if (width == TokenWidth::u16) {
    header[0] = kShardMagicU16;
    header[1] = kShardVersionU16;
    header[2] = static_cast<int32_t>(count);
  } else {
    header[0] = kShardMagicU32;
    header[1] = kShardVersionU32;
    auto u = static_cast<uint64_t>(count);
    header[2] = static_cast<int32_t>(static_cast<uint32_t>(u & 0xffffffffu));
    header[3] = static_cast<int32_t>(static_cast<uint32_t>(u >> 32));
  }
  return header;
}

}  // namespace

// ---- writer -------------------------------------------------------------------------------------

// file_ holds an io::AtomicFile: a unique exclusive temporary beside the shard, renamed into
// place by finish() and removed if the writer goes without finishing.
ShardWriter::ShardWriter(const std::string& path, TokenWidth width) : path_(path), width_(width) {
  auto file = std::make_unique<io::AtomicFile>(path);
  tmp_path_ = file->temp_path().string();
  auto header = make_header(width_, 0);
  file->write(header.data(), header.size() * sizeof(int32_t));
  file_ = file.release();
}

ShardWriter::~ShardWriter() { delete static_cast<io::AtomicFile*>(file_); }

void ShardWriter::write(const int32_t* ids, std::size_t count) {
  LMF_CHECK(file_ != nullptr, "shard '", path_, "' is already finished");
  const std::size_t width = token_bytes(width_);
  const int64_t limit = width_ == TokenWidth::u16 ? 65535 : INT32_MAX;
  buffer_.resize(count * width);
  for (std::size_t i = 0; i < count; ++i) {
    LMF_CHECK(ids[i] >= 0 && ids[i] <= limit, "token id ", ids[i], " does not fit a ",
              width_ == TokenWidth::u16 ? "uint16" : "uint32", " shard ('", path_, "')");
    if (width_ == TokenWidth::u16) {
      auto v = static_cast<uint16_t>(ids[i]);
      std::memcpy(&buffer_[i * 2], &v, 2);  // little-endian hosts only, as llm.c
    } else {
      auto v = static_cast<uint32_t>(ids[i]);
      std::memcpy(&buffer_[i * 4], &v, 4);
    }
  }
  static_cast<io::AtomicFile*>(file_)->write(buffer_.data(), buffer_.size());
  count_ += static_cast<int64_t>(count);
  LMF_CHECK(width_ == TokenWidth::u32 || count_ <= INT32_MAX, "shard '", path_, "' would hold ",
            count_, " tokens; a version-1 (uint16) shard holds at most 2^31-1, split it");
}

void ShardWriter::finish() {
  LMF_CHECK(file_ != nullptr, "shard '", path_, "' is already finished");
  std::unique_ptr<io::AtomicFile> file(static_cast<io::AtomicFile*>(file_));
  file_ = nullptr;
  auto header = make_header(width_, count_);
  file->pwrite(header.data(), header.size() * sizeof(int32_t), 0);
  file->commit();
}

void write_shard(const std::string& path, const std::vector<int32_t>& ids, TokenWidth width) {
  ShardWriter writer(path, width);
  writer.write(ids);
  writer.finish();
}

// ---- reader -------------------------------------------------------------------------------------

Shard::Shard(const std::string& path) : path_(path) {
  int fd = io::open_regular_file(path, str("shard '", io::clip(path), "'"));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(str("'", path, "' is not a regular file"));
  }
  const auto file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    throw Error(str("shard '", path, "' is truncated: ", file_bytes, " bytes, less than the ",
                    kShardHeaderBytes, "-byte header"));
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  LMF_CHECK(map != MAP_FAILED, "cannot map shard '", path, "': ", last_error());
  map_ = map;
  map_bytes_ = file_bytes;
  int32_t header[4];
  std::memcpy(header, map, sizeof(header));
  uint64_t count = 0;
  if (header[0] == kShardMagicU16) {
    width_ = TokenWidth::u16;
    if (header[1] != kShardVersionU16 || header[2] < 0) {
      release();
      throw Error(str("shard '", path, "': magic ", header[0], " needs version ", kShardVersionU16,
                      " and a non-negative count, found version ", header[1], " and count ",
                      header[2]));
    }
    count = static_cast<uint64_t>(header[2]);
  } else if (header[0] == kShardMagicU32) {
    width_ = TokenWidth::u32;
    if (header[1] != kShardVersionU32) {
      release();
      throw Error(str("shard '", path, "': magic ", header[0], " needs version ", kShardVersionU32,
                      ", found ", header[1]));
    }
    count = static_cast<uint64_t>(static_cast<uint32_t>(header[2])) |
            (static_cast<uint64_t>(static_cast<uint32_t>(header[3])) << 32);
  } else {
    release();
    throw Error(str("'", path, "' is not a token shard: magic number ", header[0], " (expected ",
                    kShardMagicU16, " for uint16 or ", kShardMagicU32, " for uint32 tokens)"));
  }
  const uint64_t data_bytes = file_bytes - kShardHeaderBytes;
  const uint64_t width = token_bytes(width_);
  if (count > data_bytes / width || data_bytes != count * width) {
    release();
    if (count > data_bytes / width) {
      throw Error(str("shard '", path, "' is truncated: the header says ", count, " tokens (",
                      kShardHeaderBytes + count * width, " bytes) but the file has ", file_bytes,
                      " bytes"));
    }
    throw Error(str("shard '", path, "' has ", data_bytes - count * width, " bytes after its ",
                    count, " tokens"));
  }
  count_ = static_cast<int64_t>(count);
  tokens_ = static_cast<const unsigned char*>(map_) + kShardHeaderBytes;
}

Shard::~Shard() { release(); }

void Shard::release() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  tokens_ = nullptr;
}

Shard::Shard(Shard&& other) noexcept { *this = std::move(other); }

Shard& Shard::operator=(Shard&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    width_ = other.width_;
    count_ = other.count_;
    map_ = other.map_;
    map_bytes_ = other.map_bytes_;
    tokens_ = other.tokens_;
    other.map_ = nullptr;
    other.tokens_ = nullptr;
    other.count_ = 0;
  }
  return *this;
}

int32_t Shard::token(int64_t index) const {
  LMF_CHECK(index >= 0 && index < count_, "token ", index, " is outside shard '", path_, "' (",
            count_, " tokens)");
  if (width_ == TokenWidth::u16) {
    uint16_t v;
    std::memcpy(&v, tokens_ + index * 2, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, tokens_ + index * 4, 4);
  return static_cast<int32_t>(v);
}

void Shard::read(int64_t offset, int64_t count, int32_t* out) const {
  LMF_CHECK(offset >= 0 && count >= 0 && offset + count <= count_, "tokens [", offset, ", ",
            offset + count, ") are outside shard '", path_, "' (", count_, " tokens)");
  if (width_ == TokenWidth::u16) {
    const unsigned char* p = tokens_ + offset * 2;
    for (int64_t i = 0; i < count; ++i) {
      uint16_t v;
      std::memcpy(&v, p + i * 2, 2);
      out[i] = v;
    }
  } else {
    const unsigned char* p = tokens_ + offset * 4;
    for (int64_t i = 0; i < count; ++i) {
      uint32_t v;
      std::memcpy(&v, p + i * 4, 4);
      // Ids above INT32_MAX become negative here and fail every vocabulary check.
      out[i] = static_cast<int32_t>(v);
    }
  }
}

std::vector<int32_t> Shard::read_all() const {
  std::vector<int32_t> out(static_cast<std::size_t>(count_));
  read(0, count_, out.data());
  return out;
}

void Shard::check_ids(int64_t vocab_size) const {
  constexpr int64_t kChunk = 1 << 16;
  std::vector<int32_t> buffer(kChunk);
  for (int64_t start = 0; start < count_; start += kChunk) {
    int64_t n = std::min(kChunk, count_ - start);
    read(start, n, buffer.data());
    for (int64_t i = 0; i < n; ++i) {
      LMF_CHECK(buffer[i] >= 0 && buffer[i] < vocab_size, "shard '", path_, "': token ",
                static_cast<uint32_t>(buffer[i]), " at token offset ", start + i,
                " is out of range for vocab size ", vocab_size);
    }
  }
}

// ---- loss masks ----------------------------------------------------------------------------------

std::string mask_path_for(const std::string& shard_path) { return shard_path + ".mask"; }

MaskWriter::MaskWriter(const std::string& path) : path_(path) {
  auto file = std::make_unique<io::AtomicFile>(path);
  std::vector<int32_t> header(kShardHeaderInts, 0);
  file->write(header.data(), header.size() * sizeof(int32_t));
  file_ = file.release();
}

MaskWriter::~MaskWriter() { delete static_cast<io::AtomicFile*>(file_); }

void MaskWriter::write(const uint8_t* flags, std::size_t count) {
  LMF_CHECK(file_ != nullptr, "mask '", path_, "' is already finished");
  for (std::size_t i = 0; i < count; ++i)
    LMF_CHECK((flags[i] & ~(kMaskTrained | kMaskStart)) == 0, "mask '", path_, "': invalid flags ",
              int(flags[i]));
  static_cast<io::AtomicFile*>(file_)->write(flags, count);
  count_ += static_cast<int64_t>(count);
}

void MaskWriter::finish() {
  LMF_CHECK(file_ != nullptr, "mask '", path_, "' is already finished");
  std::unique_ptr<io::AtomicFile> file(static_cast<io::AtomicFile*>(file_));
  file_ = nullptr;
  std::vector<int32_t> header(kShardHeaderInts, 0);
  header[0] = kMaskMagic;
  header[1] = kMaskVersion;
  const auto u = static_cast<uint64_t>(count_);
  header[2] = static_cast<int32_t>(static_cast<uint32_t>(u & 0xffffffffu));
  header[3] = static_cast<int32_t>(static_cast<uint32_t>(u >> 32));
  file->pwrite(header.data(), header.size() * sizeof(int32_t), 0);
  file->commit();
}

std::vector<uint8_t> read_mask(const std::string& path, int64_t token_count) {
  const std::string bytes = read_file(path);
  LMF_CHECK(bytes.size() >= kShardHeaderBytes, "mask '", path, "' is truncated: ", bytes.size(),
            " bytes, less than the ", kShardHeaderBytes, "-byte header");
  int32_t header[4];
  std::memcpy(header, bytes.data(), sizeof(header));
  LMF_CHECK(header[0] == kMaskMagic && header[1] == kMaskVersion, "'", path,
            "' is not a loss mask: magic ", header[0], " version ", header[1], " (expected ",
            kMaskMagic, " version ", kMaskVersion, ")");
  const uint64_t count = static_cast<uint64_t>(static_cast<uint32_t>(header[2])) |
                         (static_cast<uint64_t>(static_cast<uint32_t>(header[3])) << 32);
  LMF_CHECK(count == static_cast<uint64_t>(token_count), "mask '", path, "' has ", count,
            " flags but its shard has ", token_count, " tokens");
  LMF_CHECK(bytes.size() - kShardHeaderBytes == count, "mask '", path, "' holds ",
            bytes.size() - kShardHeaderBytes, " flag bytes, its header says ", count);
  std::vector<uint8_t> flags(bytes.begin() + kShardHeaderBytes, bytes.end());
  for (std::size_t i = 0; i < flags.size(); ++i) {
    LMF_CHECK((flags[i] & ~(kMaskTrained | kMaskStart)) == 0, "mask '", path, "': invalid flags ",
              int(flags[i]), " at token ", i);
    LMF_CHECK(flags[i] != (kMaskTrained | kMaskStart), "mask '", path, "': token ", i,
              " starts a conversation and cannot be a trained target");
  }
  LMF_CHECK(flags.empty() || (flags[0] & kMaskStart), "mask '", path,
            "': token 0 must start a conversation");
  return flags;
}

std::vector<std::string> expand_shard_paths(const std::string& spec) {
  std::vector<std::string> paths;
  std::error_code ec;
  if (fs::is_directory(spec, ec)) {
    for (const auto& entry : fs::directory_iterator(spec)) {
      if (entry.is_regular_file() && entry.path().extension() == ".bin") {
        paths.push_back(entry.path().string());
      }
    }
    LMF_CHECK(!paths.empty(), "directory '", spec, "' holds no .bin shards");
  } else if (spec.find_first_of("*?[") != std::string::npos) {
    glob_t matches{};
    int rc = ::glob(spec.c_str(), 0, nullptr, &matches);
    if (rc == 0) {
      for (std::size_t i = 0; i < matches.gl_pathc; ++i) paths.emplace_back(matches.gl_pathv[i]);
    }
    ::globfree(&matches);
    LMF_CHECK(!paths.empty(), "no shard matches '", spec, "'");
  } else {
    LMF_CHECK(fs::exists(spec, ec), "shard '", spec, "' does not exist");
    paths.push_back(spec);
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace lmf::data
