// GGUF v3 writing (see gguf_writer.h). Little-endian throughout; strings are a u64 length and the
// bytes; arrays an element type, a u64 count and the elements. Tensor data offsets are relative to
// the start of the data section, which begins at the first multiple of the alignment after the
// tensor infos, and every tensor is padded to the alignment so the next one starts aligned.
#include "io/gguf_writer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "lmforge/core/dtype.h"
#include "lmforge/core/error.h"

namespace lmf::io::gguf {
namespace {

// GGUF metadata value types.
enum ValueType : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

template <class T>
void put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // the hosts lmforge builds on are little-endian
  out.append(bytes, sizeof(T));
}

void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

uint64_t pad_to(uint64_t n, uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

}  // namespace

uint16_t f32_to_f16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {
    // Below the smallest normal half (2^-14): a subnormal, in units of 2^-24, rounded to even.
    float magnitude;
    std::memcpy(&magnitude, &abs, 4);
    const float units = magnitude * 16777216.0f;  // exact: a power-of-two scale
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(units)));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits, ties to even;
  // a carry out of the mantissa correctly bumps the exponent.
  const uint32_t rebased = abs - ((127u - 15u) << 23);
  const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

uint16_t f32_to_bf16(float x) { return bf16(x).bits; }

uint64_t encoded_size(TensorType type, uint64_t n) {
  switch (type) {
    case TensorType::f32: return n * 4;
    case TensorType::f16:
    case TensorType::bf16: return n * 2;
    case TensorType::q8_0: return n / kQ8Block * (2 + kQ8Block);
  }
  throw Error("gguf: unknown tensor type");
}

void encode(TensorType type, const float* x, uint64_t n, std::string& out) {
  out.reserve(out.size() + encoded_size(type, n));
  switch (type) {
    case TensorType::f32:
      out.append(reinterpret_cast<const char*>(x), n * 4);
      return;
    case TensorType::f16:
      for (uint64_t i = 0; i < n; ++i) put<uint16_t>(out, f32_to_f16(x[i]));
      return;
    case TensorType::bf16:
      for (uint64_t i = 0; i < n; ++i) put<uint16_t>(out, f32_to_bf16(x[i]));
      return;
    case TensorType::q8_0:
      LMF_CHECK(n % kQ8Block == 0, "gguf: q8_0 needs a multiple of ", kQ8Block, " values, got ", n);
      for (uint64_t b = 0; b < n; b += kQ8Block) {
        float amax = 0.f;
        for (int64_t j = 0; j < kQ8Block; ++j) amax = std::max(amax, std::fabs(x[b + j]));
        const float d = amax / 127.f;
        const float id = d != 0.f ? 1.f / d : 0.f;
        put<uint16_t>(out, f32_to_f16(d));
        // roundf rounds halves away from zero, as ggml's reference quantizer does.
        for (int64_t j = 0; j < kQ8Block; ++j) out += static_cast<char>(static_cast<int8_t>(std::roundf(x[b + j] * id)));
      }
      return;
  }
  throw Error("gguf: unknown tensor type");
}

void Writer::begin_key(const std::string& key, uint32_t value_type) {
  // Keys are the exporter's own constants: a repeat is a programming error, not a user error.
  LMF_CHECK(std::find(keys_.begin(), keys_.end(), key) == keys_.end(), "gguf: metadata key '", key, "' written twice");
  keys_.push_back(key);
  put_string(kv_, key);
  put<uint32_t>(kv_, value_type);
  ++kv_count_;
}

void Writer::add_string(const std::string& key, const std::string& value) {
  begin_key(key, kString);
  put_string(kv_, value);
}
void Writer::add_u32(const std::string& key, uint32_t value) {
  begin_key(key, kU32);
  put<uint32_t>(kv_, value);
}
void Writer::add_f32(const std::string& key, float value) {
  begin_key(key, kF32);
  put<float>(kv_, value);
}
void Writer::add_bool(const std::string& key, bool value) {
  begin_key(key, kBool);
  put<uint8_t>(kv_, value ? 1 : 0);
}
void Writer::add_strings(const std::string& key, const std::vector<std::string>& values) {
  begin_key(key, kArray);
  put<uint32_t>(kv_, kString);
  put<uint64_t>(kv_, values.size());
  for (const std::string& v : values) put_string(kv_, v);
}
void Writer::add_i32s(const std::string& key, const std::vector<int32_t>& values) {
  begin_key(key, kArray);
  put<uint32_t>(kv_, kI32);
  put<uint64_t>(kv_, values.size());
  for (int32_t v : values) put<int32_t>(kv_, v);
}
void Writer::add_f32s(const std::string& key, const std::vector<float>& values) {
  begin_key(key, kArray);
  put<uint32_t>(kv_, kF32);
  put<uint64_t>(kv_, values.size());
  for (float v : values) put<float>(kv_, v);
}

void Writer::add_tensor(std::string name, std::vector<int64_t> shape, TensorType type,
                        std::function<std::vector<float>()> values) {
  LMF_CHECK(!shape.empty() && shape.size() <= 4, "gguf: tensor '", name, "' has ", shape.size(), " dimensions");
  if (type == TensorType::q8_0)
    LMF_CHECK(shape.back() % kQ8Block == 0, "gguf: tensor '", name, "': q8_0 rows of ", shape.back(), " values");
  for (const Tensor& t : tensors_) LMF_CHECK(t.name != name, "gguf: tensor '", name, "' added twice");
  tensors_.push_back({std::move(name), std::move(shape), type, std::move(values)});
}

void Writer::write(AtomicFile& file) const {
  std::string head;
  head += "GGUF";
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kv_count_);
  head += kv_;
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const Tensor& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, static_cast<uint32_t>(t.shape.size()));
    uint64_t n = 1;
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) {  // ggml lists dims innermost first
      put<uint64_t>(head, static_cast<uint64_t>(*it));
      n *= static_cast<uint64_t>(*it);
    }
    put<uint32_t>(head, static_cast<uint32_t>(t.type));
    put<uint64_t>(head, offset);
    sizes.push_back(encoded_size(t.type, n));
    offset += pad_to(sizes.back(), kAlignment);
  }
  head.resize(pad_to(head.size(), kAlignment), '\0');
  file.write(head);
  std::string bytes;
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    const std::vector<float> values = tensors_[i].values();
    LMF_CHECK(encoded_size(tensors_[i].type, values.size()) == sizes[i], "gguf: tensor '", tensors_[i].name,
              "' produced ", values.size(), " values for its shape");
    bytes.clear();
    encode(tensors_[i].type, values.data(), values.size(), bytes);
    bytes.resize(pad_to(bytes.size(), kAlignment), '\0');
    file.write(bytes);
  }
}

}  // namespace lmf::io::gguf
