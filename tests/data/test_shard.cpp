// Token shards: the exact bytes of llm.c's layout (checked by reading the file raw), the uint32
// variant, and every kind of bad file (truncated, wrong magic/version, trailing bytes, bad ids).
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "e2e/cli_run.h"
#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"

using namespace lmf::data;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) { return lmf::test::work_dir("shard", name); }

std::vector<unsigned char> raw(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
}

void write_raw(const fs::path& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

int32_t int_at(const std::vector<unsigned char>& bytes, std::size_t index) {
  int32_t v;
  std::memcpy(&v, bytes.data() + index * 4, 4);
  return v;
}

// An llm.c-style file assembled byte by byte (little-endian), independent of ShardWriter.
std::vector<unsigned char> llmc_file(int32_t magic, int32_t version, int32_t count,
                                     const std::vector<uint16_t>& tokens) {
  std::vector<unsigned char> bytes(1024, 0);
  std::memcpy(bytes.data(), &magic, 4);
  std::memcpy(bytes.data() + 4, &version, 4);
  std::memcpy(bytes.data() + 8, &count, 4);
  for (uint16_t t : tokens) {
    bytes.push_back(static_cast<unsigned char>(t & 0xff));
    bytes.push_back(static_cast<unsigned char>(t >> 8));
  }
  return bytes;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const lmf::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("uint16 shards have llm.c's exact layout", "[shard]") {
  fs::path dir = temp_dir("shard_u16");
  std::vector<int32_t> ids = {0, 1, 258, 65535, 50256};
  write_shard((dir / "a.bin").string(), ids, TokenWidth::u16);
  auto bytes = raw(dir / "a.bin");
  REQUIRE(bytes.size() == 1024 + 2 * ids.size());
  CHECK(int_at(bytes, 0) == 20240520);
  CHECK(int_at(bytes, 1) == 1);
  CHECK(int_at(bytes, 2) == 5);
  for (std::size_t i = 3; i < 256; ++i) CHECK(int_at(bytes, i) == 0);
  CHECK(bytes[1024 + 4] == 0x02);  // 258 little-endian: 02 01
  CHECK(bytes[1024 + 5] == 0x01);
  CHECK(bytes[1024 + 6] == 0xff);
  CHECK(bytes[1024 + 7] == 0xff);
  Shard shard((dir / "a.bin").string());
  CHECK(shard.size() == 5);
  CHECK(shard.width() == TokenWidth::u16);
  CHECK(shard.read_all() == ids);
  CHECK(shard.token(3) == 65535);
  CHECK(!fs::exists(dir / "a.bin.tmp"));
}

TEST_CASE("a file written the llm.c way reads back", "[shard]") {
  fs::path dir = temp_dir("shard_llmc");
  write_raw(dir / "llmc.bin", llmc_file(20240520, 1, 3, {7, 8, 9}));
  Shard shard((dir / "llmc.bin").string());
  CHECK(shard.read_all() == std::vector<int32_t>{7, 8, 9});
}

TEST_CASE("uint32 shards hold ids above 65535", "[shard]") {
  fs::path dir = temp_dir("shard_u32");
  CHECK(token_width_for_vocab(65536) == TokenWidth::u16);
  CHECK(token_width_for_vocab(65537) == TokenWidth::u32);
  std::vector<int32_t> ids = {1, 70000, 100276, 0};
  write_shard((dir / "b.bin").string(), ids, TokenWidth::u32);
  auto bytes = raw(dir / "b.bin");
  REQUIRE(bytes.size() == 1024 + 4 * ids.size());
  CHECK(int_at(bytes, 0) == 20240801);
  CHECK(int_at(bytes, 1) == 2);
  CHECK(int_at(bytes, 2) == 4);
  CHECK(int_at(bytes, 3) == 0);
  CHECK(int_at(bytes, 256 + 1) == 70000);
  Shard shard((dir / "b.bin").string());
  CHECK(shard.width() == TokenWidth::u32);
  CHECK(shard.read_all() == ids);
}

TEST_CASE("writers reject ids that do not fit and leave nothing behind", "[shard]") {
  fs::path dir = temp_dir("shard_reject");
  CHECK_THROWS_AS(write_shard((dir / "c.bin").string(), {1, 65536}, TokenWidth::u16), lmf::Error);
  CHECK_THROWS_AS(write_shard((dir / "c.bin").string(), {-1}, TokenWidth::u32), lmf::Error);
  CHECK(!fs::exists(dir / "c.bin"));
  CHECK(!fs::exists(dir / "c.bin.tmp"));
  {
    ShardWriter unfinished((dir / "d.bin").string(), TokenWidth::u16);
    unfinished.write({1, 2, 3});
  }
  CHECK(!fs::exists(dir / "d.bin"));
}

TEST_CASE("an empty shard is valid", "[shard]") {
  fs::path dir = temp_dir("shard_empty");
  write_shard((dir / "e.bin").string(), {}, TokenWidth::u16);
  Shard shard((dir / "e.bin").string());
  CHECK(shard.size() == 0);
}

TEST_CASE("bad shard files give errors that name the file", "[shard]") {
  fs::path dir = temp_dir("shard_bad");
  std::vector<uint16_t> tokens = {1, 2, 3, 4};
  auto p = [&](const char* name) { return (dir / name).string(); };

  write_raw(dir / "truncated.bin", llmc_file(20240520, 1, 10, tokens));
  std::string msg = error_of([&] { Shard s(p("truncated.bin")); });
  CHECK(msg.find("truncated.bin") != std::string::npos);
  CHECK(msg.find("truncated") != std::string::npos);
  CHECK(msg.find("10 tokens") != std::string::npos);

  write_raw(dir / "magic.bin", llmc_file(12345, 1, 4, tokens));
  msg = error_of([&] { Shard s(p("magic.bin")); });
  CHECK(msg.find("magic.bin") != std::string::npos);
  CHECK(msg.find("magic") != std::string::npos);

  write_raw(dir / "version.bin", llmc_file(20240520, 7, 4, tokens));
  msg = error_of([&] { Shard s(p("version.bin")); });
  CHECK(msg.find("version.bin") != std::string::npos);
  CHECK(msg.find("version") != std::string::npos);

  write_raw(dir / "trailing.bin", llmc_file(20240520, 1, 3, tokens));
  msg = error_of([&] { Shard s(p("trailing.bin")); });
  CHECK(msg.find("trailing.bin") != std::string::npos);
  CHECK(msg.find("2 bytes after") != std::string::npos);

  write_raw(dir / "tiny.bin", {1, 2, 3});
  msg = error_of([&] { Shard s(p("tiny.bin")); });
  CHECK(msg.find("tiny.bin") != std::string::npos);
  CHECK(msg.find("header") != std::string::npos);

  msg = error_of([&] { Shard s(p("missing.bin")); });
  CHECK(msg.find("missing.bin") != std::string::npos);
}

TEST_CASE("check_ids names the file and offset of an id outside the vocabulary", "[shard]") {
  fs::path dir = temp_dir("shard_ids");
  write_shard((dir / "ids.bin").string(), {1, 2, 3, 99, 4}, TokenWidth::u16);
  Shard shard((dir / "ids.bin").string());
  shard.check_ids(100);
  std::string msg = error_of([&] { shard.check_ids(50); });
  CHECK(msg.find("ids.bin") != std::string::npos);
  CHECK(msg.find("token 99 at token offset 3") != std::string::npos);
}

TEST_CASE("a shard set is a sorted glob, a directory, or one file", "[shard]") {
  fs::path dir = temp_dir("shard_set");
  for (const char* name : {"train_002.bin", "train_000.bin", "train_001.bin", "val_000.bin"}) {
    write_shard((dir / name).string(), {1}, TokenWidth::u16);
  }
  auto paths = expand_shard_paths((dir / "train_*.bin").string());
  REQUIRE(paths.size() == 3);
  CHECK(fs::path(paths[0]).filename() == "train_000.bin");
  CHECK(fs::path(paths[2]).filename() == "train_002.bin");
  CHECK(expand_shard_paths(dir.string()).size() == 4);
  CHECK(expand_shard_paths((dir / "val_000.bin").string()).size() == 1);
  CHECK_THROWS_AS(expand_shard_paths((dir / "test_*.bin").string()), lmf::Error);
  CHECK_THROWS_AS(expand_shard_paths((dir / "nope.bin").string()), lmf::Error);
}
