// Token shards in llm.c's .bin layout: a header of 256 int32 (magic, version, token count, then
// zeros) followed by the tokens. Version 1 (magic 20240520) stores uint16 tokens, as llm.c does;
// version 2 (magic 20240801) stores uint32 tokens for vocabularies over 65,536 ids and keeps the
// high 32 bits of the token count in header[3]. Readers memory-map and validate before use.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lmf::data {

inline constexpr int32_t kShardMagicU16 = 20240520;
inline constexpr int32_t kShardVersionU16 = 1;
inline constexpr int32_t kShardMagicU32 = 20240801;
inline constexpr int32_t kShardVersionU32 = 2;
inline constexpr std::size_t kShardHeaderInts = 256;
inline constexpr std::size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);

enum class TokenWidth { u16, u32 };

/// uint16 when every id of the vocabulary fits (vocab_size <= 65,536), uint32 otherwise.
TokenWidth token_width_for_vocab(int64_t vocab_size);
/// Bytes per token: 2 or 4.
std::size_t token_bytes(TokenWidth width);

/// Writes one shard as a stream of tokens: the header is fixed up by finish(), and the file is
/// written under a temporary name and renamed, so a reader never sees a half-written shard.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, TokenWidth width);
  ~ShardWriter();  ///< without finish(), the partial file is removed
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  /// Appends tokens; throws if an id does not fit the token width or is negative.
  void write(const int32_t* ids, std::size_t count);
  void write(const std::vector<int32_t>& ids) { write(ids.data(), ids.size()); }
  int64_t tokens_written() const { return count_; }
  /// Writes the final header and renames the file into place.
  void finish();

 private:
  std::string path_;
  std::string tmp_path_;
  TokenWidth width_;
  void* file_ = nullptr;  // std::FILE*, kept out of the header
  int64_t count_ = 0;
  std::vector<unsigned char> buffer_;
};

/// Writes `ids` as one shard at `path`.
void write_shard(const std::string& path, const std::vector<int32_t>& ids, TokenWidth width);

/// A read-only, memory-mapped shard. Opening validates magic, version and the file size against
/// the token count, so a truncated or foreign file is an error that names it.
class Shard {
 public:
  explicit Shard(const std::string& path);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& path() const { return path_; }
  TokenWidth width() const { return width_; }
  /// Number of tokens.
  int64_t size() const { return count_; }
  int32_t token(int64_t index) const;
  /// Copies tokens [offset, offset + count) into `out` (bounds-checked).
  void read(int64_t offset, int64_t count, int32_t* out) const;
  std::vector<int32_t> read_all() const;
  /// Throws lmf::Error naming the file and the token offset of the first id >= vocab_size.
  void check_ids(int64_t vocab_size) const;

 private:
  void release();
  std::string path_;
  TokenWidth width_ = TokenWidth::u16;
  int64_t count_ = 0;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;
};

// ---- loss masks ----------------------------------------------------------------------------------
// A chat dataset's shard X.bin has a sidecar X.bin.mask: a header of 256 int32 (magic
// kMaskMagic, version 1, token count low and high 32 bits, zeros) and one flag byte per token of
// the shard. docs/formats.md describes it; plain shards have no sidecar and are read as before.

inline constexpr int32_t kMaskMagic = 20261213;
inline constexpr int32_t kMaskVersion = 1;
/// Flag: the token is a trained target (its prediction from the previous token counts in the loss).
inline constexpr uint8_t kMaskTrained = 1;
/// Flag: a conversation starts at this token (no window of a masked dataset crosses it).
inline constexpr uint8_t kMaskStart = 2;

/// The sidecar mask path of a shard: `shard_path` + ".mask".
std::string mask_path_for(const std::string& shard_path);

/// Streams a mask file (temporary name, renamed by finish(), removed without it).
class MaskWriter {
 public:
  explicit MaskWriter(const std::string& path);
  ~MaskWriter();
  MaskWriter(const MaskWriter&) = delete;
  MaskWriter& operator=(const MaskWriter&) = delete;
  /// Appends flag bytes; throws on a byte with bits other than kMaskTrained | kMaskStart.
  void write(const uint8_t* flags, std::size_t count);
  int64_t size() const { return count_; }
  void finish();

 private:
  std::string path_;
  void* file_ = nullptr;  // io::AtomicFile*, kept out of the header
  int64_t count_ = 0;
};

/// Reads and validates the mask at `path` for a shard of `token_count` tokens: magic, version,
/// count equal to the shard's, file size, flag bits, a conversation start at token 0, and no
/// trained start token (a conversation's first token is never a target). Errors name the file.
std::vector<uint8_t> read_mask(const std::string& path, int64_t token_count);

/// The shard files of a dataset spec, sorted: one file, a directory (its *.bin files), or a glob
/// pattern such as "data/train_*.bin". Throws when nothing matches.
std::vector<std::string> expand_shard_paths(const std::string& spec);

}  // namespace lmf::data
