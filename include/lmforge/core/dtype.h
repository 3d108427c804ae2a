// Element types of tensors. Math is done in f32 ("opmath"); bf16 is a storage type converted
// with round-to-nearest-even; i32 and u16 hold token ids.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace lmf {

enum class DType : uint8_t { f32, bf16, i32, u16 };

/// Size of one element in bytes.
std::size_t dtype_size(DType dtype);
/// "f32", "bf16", "i32", "u16".
std::string dtype_name(DType dtype);
/// Parses a name produced by dtype_name; throws lmf::Error otherwise.
DType parse_dtype(const std::string& name);

/// Brain float 16: the top half of an IEEE f32.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  explicit bf16(float value) {
    uint32_t u;
    std::memcpy(&u, &value, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  explicit operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &u, 4);
    return value;
  }
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <>
constexpr DType dtype_of<uint16_t>() { return DType::u16; }

}  // namespace lmf
