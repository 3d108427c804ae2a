// Tests for the safetensors reader and writer: round trips, dtype conversions, and every kind of
// malformed file (written byte by byte into a temporary directory) giving an lmf::Error that names
// the file, and the tensor where one is at fault.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "lmforge/io/safetensors.h"

namespace fs = std::filesystem;
using lmf::DType;
using lmf::Tensor;

namespace {

fs::path make_temp_dir() {
  std::random_device rd;
  fs::path dir = fs::temp_directory_path() / ("lmf_safetensors_" + std::to_string(rd()));
  fs::create_directories(dir);
  return dir;
}

struct TempDir {
  fs::path path = make_temp_dir();
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string u64_le(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A file with the given JSON header text and `data_bytes` zero bytes of data.
void write_raw(const fs::path& path, const std::string& header, std::size_t data_bytes) {
  write_bytes(path, u64_le(header.size()) + header + std::string(data_bytes, '\0'));
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Expects read_safetensors to throw an lmf::Error whose message names the file and contains
// every fragment given.
void expect_error(const fs::path& path, std::initializer_list<std::string> fragments) {
  try {
    lmf::io::read_safetensors(path);
    FAIL("no error for " << path);
  } catch (const lmf::Error& e) {
    std::string message = e.what();
    INFO(message);
    CHECK(message.find(path.string()) != std::string::npos);
    for (const auto& f : fragments) CHECK(message.find(f) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("safetensors round trip keeps names, shapes, values and metadata") {
  TempDir dir;
  lmf::Generator gen(7);
  Tensor a = Tensor::randn({3, 5}, gen);
  Tensor b = Tensor::randn({7}, gen);
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, -2, 3, 400000}, {2, 2});
  Tensor scalar = Tensor::from_vector(std::vector<float>{2.5f}, {});
  Tensor empty = Tensor::zeros({0, 4});
  const fs::path path = dir.path / "model.safetensors";
  lmf::io::write_safetensors(path, {{"z.a", a}, {"b", b}, {"ids", ids}, {"s", scalar},
                                    {"empty", empty}},
                             {{"format", "pt"}});
  CHECK_FALSE(fs::exists(dir.path / "model.safetensors.tmp"));

  auto file = lmf::io::read_safetensors(path);
  REQUIRE(file.tensors.size() == 5);
  CHECK(file.metadata.at("format") == "pt");
  CHECK(file.tensors.at("z.a").shape() == lmf::Shape{3, 5});
  CHECK(file.tensors.at("z.a").to_vector() == a.to_vector());
  CHECK(file.tensors.at("b").to_vector() == b.to_vector());
  CHECK(file.tensors.at("ids").dtype() == DType::i32);
  CHECK(file.tensors.at("ids").to_vector() == ids.to_vector());
  CHECK(file.tensors.at("s").shape().empty());
  CHECK(file.tensors.at("s").item() == 2.5f);
  CHECK(file.tensors.at("empty").shape() == lmf::Shape{0, 4});

  // The header is padded so the data buffer starts 8-byte aligned.
  std::string bytes = read_bytes(path);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK(header_len % 8 == 0);
  auto header = nlohmann::json::parse(bytes.substr(8, header_len));
  CHECK(header["z.a"]["dtype"] == "F32");
  CHECK(header["ids"]["dtype"] == "I32");
}

TEST_CASE("safetensors writes non-contiguous tensors in logical order") {
  TempDir dir;
  Tensor base = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  // A transposed view: (3, 2) with strides (1, 3).
  Tensor t = Tensor::view_of(base.storage(), {3, 2}, DType::f32, 0, {1, 3});
  lmf::io::write_safetensors(dir.path / "t.safetensors", {{"t", t}});
  auto file = lmf::io::read_safetensors(dir.path / "t.safetensors");
  CHECK(file.tensors.at("t").to_vector() == std::vector<float>{1, 4, 2, 5, 3, 6});
}

TEST_CASE("safetensors bf16 writing rounds and reads back as f32") {
  TempDir dir;
  Tensor a = Tensor::from_vector(std::vector<float>{1.0f, -2.0f, 3.140625f, 1e-3f}, {4});
  lmf::io::write_safetensors(dir.path / "b.safetensors", {{"a", a}}, {}, DType::bf16);
  std::string bytes = read_bytes(dir.path / "b.safetensors");
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK(nlohmann::json::parse(bytes.substr(8, header_len))["a"]["dtype"] == "BF16");
  auto file = lmf::io::read_safetensors(dir.path / "b.safetensors");
  auto values = file.tensors.at("a").to_vector();
  CHECK(values[0] == 1.0f);
  CHECK(values[1] == -2.0f);
  CHECK(values[2] == 3.140625f);
  CHECK(values[3] == Approx(1e-3f).epsilon(4e-3));
}

TEST_CASE("safetensors reads F16 tensors, subnormals and infinities included") {
  TempDir dir;
  // 1.0, -2.0, 65504 (max), smallest subnormal 2^-24, +inf, 0.5
  const std::uint16_t halves[] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x3800};
  std::string data(reinterpret_cast<const char*>(halves), sizeof(halves));
  std::string header = R"({"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]}})";
  write_bytes(dir.path / "h.safetensors", u64_le(header.size()) + header + data);
  auto values = lmf::io::read_safetensors(dir.path / "h.safetensors").tensors.at("h").to_vector();
  CHECK(values[0] == 1.0f);
  CHECK(values[1] == -2.0f);
  CHECK(values[2] == 65504.0f);
  CHECK(values[3] == std::ldexp(1.0f, -24));
  CHECK(std::isinf(values[4]));
  CHECK(values[5] == 0.5f);
}

TEST_CASE("safetensors reads unaligned data offsets") {
  TempDir dir;
  // Offset 1 puts the f32 at an odd address inside the mapping.
  float value = 1.5f;
  std::string header = R"({"pad":{"dtype":"BF16","shape":[0],"data_offsets":[0,0]},)"
                       R"("v":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
  std::string data = std::string(1, '\0') + std::string(reinterpret_cast<char*>(&value), 4);
  write_bytes(dir.path / "u.safetensors", u64_le(header.size()) + header + data);
  CHECK(lmf::io::read_safetensors(dir.path / "u.safetensors").tensors.at("v").item() == 1.5f);
}

TEST_CASE("safetensors rejects malformed files with an error naming the file and tensor") {
  TempDir dir;
  const fs::path p = dir.path / "bad.safetensors";

  SECTION("missing file") { expect_error(dir.path / "absent.safetensors", {"cannot open"}); }
  SECTION("empty file") {
    write_bytes(p, "");
    expect_error(p, {"shorter"});
  }
  SECTION("shorter than 8 bytes") {
    write_bytes(p, "abc");
    expect_error(p, {"shorter"});
  }
  SECTION("header length beyond the file") {
    write_bytes(p, u64_le(1000) + "{}");
    expect_error(p, {"header length 1000", "past the end"});
  }
  SECTION("absurd header length") {
    write_bytes(p, u64_le(std::uint64_t(1) << 40) + "{}");
    expect_error(p, {"limit"});
  }
  SECTION("header length near 2^64 does not wrap around") {
    write_bytes(p, u64_le(~std::uint64_t(0)) + "{}");
    expect_error(p, {"header length"});
  }
  SECTION("JSON that does not parse") {
    write_raw(p, R"({"a": {"dtype": "F32", )", 0);
    expect_error(p, {"not valid JSON"});
  }
  SECTION("header that is not an object") {
    write_raw(p, "[1, 2]", 0);
    expect_error(p, {"not a JSON object"});
  }
  SECTION("unknown dtype") {
    write_raw(p, R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2);
    expect_error(p, {"\"w\"", "F8_E4M3"});
  }
  SECTION("negative dimension") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[-1, 2],"data_offsets":[0,8]}})", 8);
    expect_error(p, {"\"w\"", "negative dimension"});
  }
  SECTION("non-integer dimension") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 8);
    expect_error(p, {"\"w\"", "non-integer"});
  }
  SECTION("huge shape overflowing 64 bits") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[4294967296, 4294967296],"data_offsets":[0,4]}})",
              4);
    expect_error(p, {"\"w\"", "too large"});
  }
  SECTION("missing field") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[1]}})", 4);
    expect_error(p, {"\"w\"", "data_offsets"});
  }
  SECTION("offsets out of range (truncated data)") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12);
    expect_error(p, {"\"w\"", "past the 12-byte data buffer"});
  }
  SECTION("offsets not matching dtype x shape") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", 16);
    expect_error(p, {"\"w\"", "needs 16"});
  }
  SECTION("end before begin") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 16);
    expect_error(p, {"\"w\"", "end before begin"});
  }
  SECTION("negative offsets") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 16);
    expect_error(p, {"\"w\"", "non-negative"});
  }
  SECTION("overlapping tensors") {
    write_raw(p,
              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
              16);
    expect_error(p, {"\"b\"", "overlaps", "\"a\""});
  }
  SECTION("metadata that is not an object") {
    write_raw(p, R"({"__metadata__": 3})", 0);
    expect_error(p, {"__metadata__"});
  }
  SECTION("entry that is not an object") {
    write_raw(p, R"({"w": 3})", 0);
    expect_error(p, {"\"w\"", "not an object"});
  }
  SECTION("a valid file cut short") {
    lmf::io::write_safetensors(p, {{"w", Tensor::ones({64})}});
    std::string bytes = read_bytes(p);
    write_bytes(p, bytes.substr(0, bytes.size() - 10));
    expect_error(p, {"\"w\"", "truncated"});
  }
}

TEST_CASE("safetensors writer replaces the old file atomically and rejects bad input") {
  TempDir dir;
  const fs::path p = dir.path / "w.safetensors";
  lmf::io::write_safetensors(p, {{"w", Tensor::ones({2})}});
  lmf::io::write_safetensors(p, {{"w", Tensor::zeros({3})}});
  CHECK(lmf::io::read_safetensors(p).tensors.at("w").to_vector() == std::vector<float>{0, 0, 0});
  CHECK_THROWS_AS(lmf::io::write_safetensors(p, {{"w", Tensor::ones({2})}, {"w", Tensor::ones({2})}}),
                  lmf::Error);
  CHECK_THROWS_AS(lmf::io::write_safetensors(p, {{"__metadata__", Tensor::ones({2})}}), lmf::Error);
  // The failed writes left the previous file in place and no temporary behind.
  CHECK(lmf::io::read_safetensors(p).tensors.at("w").numel() == 3);
  CHECK_FALSE(fs::exists(dir.path / "w.safetensors.tmp"));
  CHECK_THROWS_AS(lmf::io::write_safetensors(dir.path / "no_such_dir" / "x.safetensors",
                                             {{"w", Tensor::ones({2})}}),
                  lmf::Error);
}

TEST_CASE("write_file_atomic writes whole files") {
  TempDir dir;
  lmf::io::write_file_atomic(dir.path / "a.json", "{\"x\": 1}\n");
  CHECK(read_bytes(dir.path / "a.json") == "{\"x\": 1}\n");
  CHECK_FALSE(fs::exists(dir.path / "a.json.tmp"));
}
