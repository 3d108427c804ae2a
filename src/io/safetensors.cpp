// safetensors reader and writer. The reader maps the file read-only, validates the whole header
// before touching any tensor bytes, then copies (and converts) each tensor into its own storage so
// the mapping can be dropped at once and unaligned offsets never reach typed loads.
#include "lmforge/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/safe_file.h"
#include "io/untrusted_json.h"

namespace lmf::io {
namespace {

using json = nlohmann::json;

enum class FileDType { f32, bf16, f16, i32 };

struct Entry {
  std::string name;
  FileDType dtype;
  Shape shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

std::size_t file_dtype_size(FileDType dtype) {
  switch (dtype) {
    case FileDType::f32: return 4;
    case FileDType::i32: return 4;
    case FileDType::bf16: return 2;
    case FileDType::f16: return 2;
  }
  return 0;
}

// Read-only mapping of a whole file, unmapped on scope exit (also when a check throws).
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path) {
    fd_ = open_regular_file(path);
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      ::close(fd_);
      throw Error(str(clip(path.string()), ": cannot stat: ", std::strerror(errno)));
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (p == MAP_FAILED) {
        ::close(fd_);
        throw Error(str(path.string(), ": cannot map: ", std::strerror(errno)));
      }
      data_ = static_cast<const unsigned char*>(p);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  int fd_ = -1;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

FileDType parse_file_dtype(const std::string& name, const std::string& where) {
  if (name == "F32") return FileDType::f32;
  if (name == "BF16") return FileDType::bf16;
  if (name == "F16") return FileDType::f16;
  if (name == "I32") return FileDType::i32;
  throw Error(str(where, ": unsupported dtype \"", clip(name), "\" (accepted: F32, BF16, F16, I32)"));
}

std::uint64_t read_offset(const json& value, const std::string& where) {
  LMF_CHECK(value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0),
            where, ": data_offsets must be non-negative integers");
  return value.get<std::uint64_t>();
}

Entry parse_entry(const std::string& name, const json& spec, const std::string& file) {
  const std::string where = str(file, ": tensor \"", clip(name), "\"");
  LMF_CHECK(spec.is_object(), where, ": header entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    LMF_CHECK(spec.contains(key), where, ": header entry lacks \"", key, "\"");
  Entry entry;
  entry.name = name;
  LMF_CHECK(spec["dtype"].is_string(), where, ": dtype is not a string");
  entry.dtype = parse_file_dtype(spec["dtype"].get<std::string>(), where);

  const json& shape = spec["shape"];
  LMF_CHECK(shape.is_array(), where, ": shape is not an array");
  // numel * element size must fit in 64 bits; the offsets check below then bounds it by the file.
  std::uint64_t numel = 1;
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() / 8;
  for (const json& dim : shape) {
    LMF_CHECK(dim.is_number_integer(), where, ": shape holds a non-integer");
    LMF_CHECK(dim.is_number_unsigned() || dim.get<int64_t>() >= 0, where,
              ": negative dimension ", json_brief(dim), " in shape ", json_brief(shape));
    std::uint64_t d = dim.get<std::uint64_t>();
    LMF_CHECK(d <= static_cast<std::uint64_t>(std::numeric_limits<int64_t>::max()), where,
              ": dimension ", d, " is too large");
    LMF_CHECK(d == 0 || numel <= limit / d, where, ": shape ", json_brief(shape), " is too large");
    numel *= d;
    entry.shape.push_back(static_cast<int64_t>(d));
  }

  const json& offsets = spec["data_offsets"];
  LMF_CHECK(offsets.is_array() && offsets.size() == 2, where,
            ": data_offsets must be [begin, end]");
  entry.begin = read_offset(offsets[0], where);
  entry.end = read_offset(offsets[1], where);
  LMF_CHECK(entry.begin <= entry.end, where, ": data_offsets [", entry.begin, ", ", entry.end,
            "] end before begin");
  const std::uint64_t expected = numel * file_dtype_size(entry.dtype);
  LMF_CHECK(entry.end - entry.begin == expected, where, ": data_offsets [", entry.begin, ", ",
            entry.end, "] span ", entry.end - entry.begin, " bytes but dtype ",
            spec["dtype"].get<std::string>(), " x shape ", json_brief(shape), " needs ", expected);
  return entry;
}

std::uint64_t read_le_u64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::uint16_t read_le_u16(const unsigned char* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}

Tensor decode(const Entry& entry, const unsigned char* bytes) {
  const int64_t n = shape_numel(entry.shape);
  if (entry.dtype == FileDType::i32) {
    Tensor t = Tensor::empty(entry.shape, DType::i32);
    std::memcpy(t.raw_data(), bytes, static_cast<std::size_t>(n) * 4);
    return t;
  }
  Tensor t = Tensor::empty(entry.shape, DType::f32);
  float* out = t.data<float>();
  switch (entry.dtype) {
    case FileDType::f32: std::memcpy(out, bytes, static_cast<std::size_t>(n) * 4); break;
    case FileDType::bf16:
      for (int64_t i = 0; i < n; ++i) {
        bf16 b;
        b.bits = read_le_u16(bytes + 2 * i);
        out[i] = static_cast<float>(b);
      }
      break;
    case FileDType::f16:
      for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(read_le_u16(bytes + 2 * i));
      break;
    case FileDType::i32: break;
  }
  return t;
}

// Lets `fill` write into a fresh exclusive temporary file beside `path`, then renames it over
// `path` (AtomicFile); on any failure the temporary is removed and `path` is left untouched.
template <class Fill>
void write_atomically(const std::filesystem::path& path, Fill&& fill) {
  AtomicFile file(path);
  fill(file);
  file.commit();
}

}  // namespace

float half_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  std::uint32_t exponent = (bits >> 10) & 0x1fu;
  std::uint32_t mantissa = bits & 0x3ffu;
  std::uint32_t u;
  if (exponent == 0x1f) {
    u = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    u = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    u = sign;
  } else {
    // Subnormal half: normalise into an f32 (which has the range to represent it exactly).
    int e = -1;
    do {
      ++e;
      mantissa <<= 1;
    } while ((mantissa & 0x400u) == 0);
    u = sign | (static_cast<std::uint32_t>(112 - e) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  return read_safetensors(path, nullptr);
}

SafetensorsFile read_safetensors(const std::filesystem::path& path, const HeaderCheck& check) {
  const std::string file = clip(path.string());
  MappedFile mapped(path);
  const std::size_t size = mapped.size();
  LMF_CHECK(size >= 8, file, ": not a safetensors file: ", size,
            " bytes is shorter than the 8-byte header length");
  const std::uint64_t header_len = read_le_u64(mapped.data());
  LMF_CHECK(header_len <= kMaxSafetensorsHeaderBytes, file, ": header length ", header_len,
            " bytes is beyond the ", kMaxSafetensorsHeaderBytes, "-byte limit (corrupt file?)");
  LMF_CHECK(header_len <= size - 8, file, ": header length ", header_len,
            " bytes runs past the end of the ", size, "-byte file (truncated?)");

  const char* header_begin = reinterpret_cast<const char*>(mapped.data() + 8);
  json header = parse_untrusted_json(std::string_view(header_begin, header_len),
                                     file + ": header");
  LMF_CHECK(header.is_object(), file, ": header is not a JSON object");

  SafetensorsFile result;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      LMF_CHECK(it.value().is_object(), file, ": __metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        result.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>()
                                                         : json_brief(m.value());
      continue;
    }
    entries.push_back(parse_entry(it.key(), it.value(), file));
  }

  const std::uint64_t data_size = size - 8 - header_len;
  for (const Entry& e : entries)
    LMF_CHECK(e.end <= data_size, file, ": tensor \"", clip(e.name), "\": data_offsets [", e.begin, ", ",
              e.end, "] run past the ", data_size, "-byte data buffer (truncated?)");
  // Overlap check on the byte ranges sorted by start; empty tensors occupy nothing.
  std::vector<const Entry*> order;
  for (const Entry& e : entries)
    if (e.end > e.begin) order.push_back(&e);
  std::sort(order.begin(), order.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (std::size_t i = 1; i < order.size(); ++i)
    LMF_CHECK(order[i]->begin >= order[i - 1]->end, file, ": tensor \"", clip(order[i]->name),
              "\" overlaps tensor \"", clip(order[i - 1]->name), "\" in the data buffer");

  // The caller's expectations (names, shapes) come before any tensor is allocated, so a small
  // sparse file declaring a huge extra tensor is refused instead of read.
  if (check) {
    std::vector<std::pair<std::string, Shape>> index;
    for (const Entry& e : entries) index.emplace_back(e.name, e.shape);
    check(index);
  }

  const unsigned char* data = mapped.data() + 8 + header_len;
  for (const Entry& e : entries) result.tensors.emplace(e.name, decode(e, data + e.begin));
  return result;
}

void write_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata, DType float_dtype) {
  const std::string file = path.string();
  LMF_CHECK(float_dtype == DType::f32 || float_dtype == DType::bf16, file,
            ": floating tensors can be written as f32 or bf16, not ", dtype_name(float_dtype));
  // Bring every tensor to a contiguous CPU tensor of the stored dtype first, so the header's
  // offsets and the bytes written afterwards come from the same objects.
  std::vector<Tensor> stored;
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    LMF_CHECK(name != "__metadata__", file, ": \"__metadata__\" is not a valid tensor name");
    LMF_CHECK(!header.contains(name), file, ": tensor \"", name, "\" given twice");
    LMF_CHECK(tensor.defined(), file, ": tensor \"", name, "\" is undefined");
    Tensor t = tensor.to(Device::cpu());
    const char* dtype_text = nullptr;
    if (t.dtype() == DType::i32) {
      dtype_text = "I32";
    } else if (t.dtype() == DType::u16) {
      throw Error(str(file, ": tensor \"", name, "\": u16 tensors are not written to safetensors"));
    } else {
      if (t.dtype() != float_dtype) t = t.to(float_dtype);
      dtype_text = float_dtype == DType::f32 ? "F32" : "BF16";
    }
    t = t.contiguous_copy();
    const std::uint64_t nbytes = t.nbytes();
    header[name] = {{"dtype", dtype_text}, {"shape", t.shape()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    stored.push_back(t);
  }
  std::string header_text = header.dump();
  // Pad with spaces to a multiple of 8 so the data buffer starts aligned, as other writers do.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header_text.size() >> (8 * i));

  write_atomically(path, [&](AtomicFile& out) {
    out.write(length, 8);
    out.write(header_text);
    for (const Tensor& t : stored)
      if (t.nbytes() > 0) out.write(t.raw_data(), t.nbytes());
  });
}

void write_file_atomic(const std::filesystem::path& path, const std::string& bytes) {
  io::write_file_atomic(path, std::string_view(bytes));
}

}  // namespace lmf::io
