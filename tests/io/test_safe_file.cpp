// The shared input/output rules: atomic exclusive writes that never follow planted links, regular
// files only as inputs, depth-bounded JSON, clipped message values, strict decimal integers.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "e2e/cli_run.h"
#include "io/safe_file.h"
#include "io/untrusted_json.h"
#include "lmforge/core/error.h"

namespace fs = std::filesystem;
using lmf::test::slurp;
using lmf::test::write_file;

TEST_CASE("write_file_atomic: planted links at the temporary and final names are not followed") {
  lmf::test::TempDir tmp;
  const fs::path victim = tmp.path / "victim", target = tmp.path / "out.json";
  write_file(victim, "precious");
  fs::create_symlink(victim, tmp.path / "out.json.tmp");
  fs::create_symlink(victim, target);
  lmf::io::write_file_atomic(target, "new");
  CHECK(slurp(victim) == "precious");
  CHECK(fs::is_regular_file(fs::symlink_status(target)));
  CHECK(slurp(target) == "new");
  // Nothing but the planted link, the victim and the output remains.
  CHECK(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()) == 3);
}

TEST_CASE("AtomicFile: without commit nothing appears and the temporary is removed") {
  lmf::test::TempDir tmp;
  {
    lmf::io::AtomicFile file(tmp.path / "x.bin");
    file.write("abc");
  }
  CHECK(fs::is_empty(tmp.path));
}

TEST_CASE("open_regular_file: FIFOs, devices and directories are refused without blocking") {
  lmf::test::TempDir tmp;
  REQUIRE(::mkfifo((tmp.path / "fifo").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(lmf::io::read_regular_file(tmp.path / "fifo"), Catch::Contains("FIFO"));
  CHECK_THROWS_WITH(lmf::io::read_regular_file("/dev/zero"), Catch::Contains("character device"));
  CHECK_THROWS_WITH(lmf::io::read_regular_file(tmp.path), Catch::Contains("directory"));
  write_file(tmp.path / "big", std::string(100, 'x'));
  CHECK_THROWS_WITH(lmf::io::read_regular_file(tmp.path / "big", 99), Catch::Contains("limit"));
  CHECK(lmf::io::read_regular_file(tmp.path / "big", 100).size() == 100);
}

TEST_CASE("untrusted JSON: depth bounded, strings with brackets ignored, values clipped") {
  CHECK(lmf::io::json_nesting_depth(R"({"a":[1,{"b":"[[[[["}]})") == 3);
  CHECK_THROWS_WITH(lmf::io::parse_untrusted_json(std::string(100000, '[') + std::string(100000, ']'), "f"),
                    Catch::Contains("nested deeper"));
  CHECK(lmf::io::parse_untrusted_json(std::string(64, '[') + std::string(64, ']'), "f").is_array());
  CHECK_THROWS_WITH(lmf::io::parse_untrusted_json("{", "f.json"), "f.json: not valid JSON");
  const std::string brief = lmf::io::json_brief(nlohmann::json(std::vector<int>(100000, 7)));
  CHECK(brief.size() < 260);
  CHECK(lmf::io::clip("short") == "short");
  CHECK(lmf::io::clip(std::string(1000, 'a')).find("(1000 bytes)") != std::string::npos);
}

TEST_CASE("integers: decimal text only, in range") {
  CHECK(lmf::io::parse_int_in_range("42", 0, 100, "x") == 42);
  CHECK(lmf::io::parse_int_in_range("-3", -5, 5, "x") == -3);
  for (const char* bad : {"010", "0x10", "+1", " 1", "1e3", "101", "-1", "", "9223372036854775808"})
    CHECK_THROWS(lmf::io::parse_int_in_range(bad, 0, 100, "x"));
  CHECK(lmf::io::parse_uint64("18446744073709551615", "s") == 18446744073709551615ull);
  CHECK_THROWS(lmf::io::parse_uint64("18446744073709551616", "s"));
  CHECK_THROWS(lmf::io::parse_uint64("-1", "s"));
}

TEST_CASE("path_within and check_replaceable_dir") {
  lmf::test::TempDir tmp;
  CHECK(lmf::io::path_within(tmp.path / "a" / "b", tmp.path));
  CHECK(lmf::io::path_within(tmp.path, tmp.path / "."));
  CHECK_FALSE(lmf::io::path_within(tmp.path / "ab", tmp.path / "a"));
  fs::create_directories(tmp.path / "d");
  write_file(tmp.path / "d" / "train.bin", "x");
  CHECK_NOTHROW(lmf::io::check_replaceable_dir(tmp.path / "d", {"train.bin"}, "--out"));
  write_file(tmp.path / "d" / "mine.txt", "x");
  CHECK_THROWS_WITH(lmf::io::check_replaceable_dir(tmp.path / "d", {"train.bin"}, "--out"),
                    Catch::Contains("mine.txt"));
}
