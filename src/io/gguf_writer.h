// The GGUF v3 container (internal to io/): typed key/value metadata, tensor infos and aligned tensor
// data, plus the element encodings lmforge writes (f32, f16, bf16, q8_0). Tensor values are
// produced one tensor at a time while writing, so an export never holds a second copy of the model.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/safe_file.h"

namespace lmf::io::gguf {

/// ggml_type ids of the tensor encodings written here.
enum class TensorType : uint32_t { f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30 };

/// Elements per q8_0 block; a block is an f16 scale followed by 32 int8 values (34 bytes).
inline constexpr int64_t kQ8Block = 32;
inline constexpr uint32_t kAlignment = 32;

/// IEEE binary16 bits of `x`, rounded to nearest with ties to even (overflow to inf, NaN kept).
uint16_t f32_to_f16(float x);
/// bf16 bits of `x`, rounded to nearest with ties to even.
uint16_t f32_to_bf16(float x);

/// Bytes of `n` elements in rows of `row` elements (q8_0 needs row % 32 == 0).
uint64_t encoded_size(TensorType type, uint64_t n);
/// Appends the encoding of `x[0..n)` to `out`. q8_0: per block of 32, d = max|x| / 127 in f32,
/// q = round-half-away(x / d) (x times 1/d, as ggml's reference quantizer), d stored as f16.
void encode(TensorType type, const float* x, uint64_t n, std::string& out);

class Writer {
 public:
  void add_string(const std::string& key, const std::string& value);
  void add_u32(const std::string& key, uint32_t value);
  void add_f32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  void add_strings(const std::string& key, const std::vector<std::string>& values);
  void add_i32s(const std::string& key, const std::vector<int32_t>& values);
  void add_f32s(const std::string& key, const std::vector<float>& values);

  /// A tensor of `shape` (outermost first, as PyTorch: a Linear weight is (OUT, IN); the file
  /// lists it innermost first) whose row-major f32 values `values()` returns when it is written.
  void add_tensor(std::string name, std::vector<int64_t> shape, TensorType type,
                  std::function<std::vector<float>()> values);

  /// Header, metadata, tensor infos, then each tensor's data at a multiple of kAlignment.
  void write(AtomicFile& file) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    TensorType type;
    std::function<std::vector<float>()> values;
  };
  void begin_key(const std::string& key, uint32_t value_type);

  std::string kv_;
  uint64_t kv_count_ = 0;
  std::vector<std::string> keys_;
  std::vector<Tensor> tensors_;
};

}  // namespace lmf::io::gguf
