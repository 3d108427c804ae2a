// Reading and writing the safetensors format: an 8-byte little-endian header length N, N bytes
// of JSON ({name: {dtype, shape, data_offsets}, "__metadata__": {...}}), then one data buffer.
// Every file is treated as untrusted: sizes, offsets, shapes and dtypes are checked before use and
// a bad file is an lmf::Error naming the file (and the tensor), never a crash.
#pragma once
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmf::io {

/// The contents of a safetensors file. Floating tensors (F32, BF16, F16) are returned as f32
/// CPU tensors, I32 as i32; each tensor owns its memory (nothing refers back to the file).
struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  ///< the "__metadata__" object, if any
};

/// Largest JSON header accepted; real headers are a few hundred kilobytes at most, so anything
/// bigger is a corrupt or hostile file rather than a model.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100ull * 1024 * 1024;

/// Reads and validates a whole safetensors file. Throws lmf::Error naming the file (and the
/// tensor, where one is at fault) when the file is short, the header length is out of range, the
/// JSON does not parse, a dtype is unknown, a dimension is negative, or data offsets are out of
/// range, overlapping, or disagree with dtype x shape.
SafetensorsFile read_safetensors(const std::filesystem::path& path);

/// Called by read_safetensors with every tensor's name and shape after the header is validated
/// and before any tensor data is read or allocated; throws lmf::Error to refuse the file (for
/// example a tensor the expected model does not have).
using HeaderCheck =
    std::function<void(const std::vector<std::pair<std::string, Shape>>& names_and_shapes)>;

/// read_safetensors with `check` run on the header first.
SafetensorsFile read_safetensors(const std::filesystem::path& path, const HeaderCheck& check);

/// Named tensors in the order they are written.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// Writes tensors (any device, layout or dtype) to a safetensors file. Floating tensors are stored
/// as `float_dtype` (f32 or bf16), i32 tensors as I32. The file is written to a unique exclusive
/// temporary name beside `path` (never following a symlink), fsynced and renamed over `path`, so
/// a reader never sees a half-written file.
void write_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {},
                       DType float_dtype = DType::f32);

/// Converts an IEEE half-precision value to f32 (exact).
float half_to_float(std::uint16_t bits);

/// Writes `bytes` to a unique exclusive temporary file beside `path` (O_EXCL|O_NOFOLLOW), fsyncs
/// it, renames it over `path` and fsyncs the parent directory. Shared by every writer of small files that must appear whole or not at all.
void write_file_atomic(const std::filesystem::path& path, const std::string& bytes);

}  // namespace lmf::io
