// SHA-256, so that meta.json records checksums of the source files that `sha256sum` can verify.
// Streaming: update() with consecutive chunks, then hex_digest().
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lmf::data {

class Sha256 {
 public:
  Sha256();
  void update(std::string_view bytes);
  /// Lower-case hex of the digest; the object must not be updated afterwards.
  std::string hex_digest();

 private:
  void block(const unsigned char* p);
  uint32_t state_[8];
  unsigned char buffer_[64];
  std::size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace lmf::data
