// End-to-end tests of `lmforge eval --task` and `--text`, run as a user would run the binary on
// the reference fixture (tests/reference/make_task_eval_fixtures.py): acc, acc_norm and count equal
// the reference exactly, bits-per-byte matches its definition, and bad task files give one error
// line naming the file and line.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "e2e/cli_run.h"

namespace fs = std::filesystem;
using lmf::test::quote;
using lmf::test::run;
using lmf::test::RunResult;
using lmf::test::TempDir;
using lmf::test::write_file;
using nlohmann::json;

namespace {

const fs::path kFixture = fs::path(LMF_SOURCE_DIR) / "tests" / "reference" / "fixtures" / "task_eval" / "gpt2";

json reference() {
  std::ifstream in(kFixture / "reference.json");
  return json::parse(in);
}

RunResult run_eval(const std::string& args, const fs::path& dir) {
  return run(quote(LMF_CLI) + " eval --checkpoint " + quote(kFixture.string()) + " " + args, dir);
}

// One line on stderr containing `needle`, and a non-zero exit.
void check_clean_failure(const RunResult& r, const std::string& needle) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("error") != std::string::npos);
  CHECK(r.err.find(needle) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

}  // namespace

TEST_CASE("lmforge eval --task reports the reference's acc, acc_norm and count") {
  TempDir tmp("lmf_cli_eval_tasks_");
  const json ref = reference();
  const std::string task = (kFixture / "task.jsonl").string();
  RunResult r = run_eval("--task " + quote(task) + " --json", tmp.path);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json out = json::parse(r.out);
  CHECK(out.at("task") == task);
  CHECK(out.at("acc").get<double>() == ref.at("task").at("acc").get<double>());
  CHECK(out.at("acc_norm").get<double>() == ref.at("task").at("acc_norm").get<double>());
  CHECK(out.at("count") == ref.at("task").at("count"));

  // Lines for people; a shorter window changes the scores (the reference has them too).
  RunResult text = run_eval("--task " + quote(task) + " --block-size 32", tmp.path);
  REQUIRE(text.exit_code == 0);
  std::ostringstream expected;
  expected << std::fixed;
  expected.precision(6);
  expected << "task: " << task << "\nacc: " << ref.at("task_block_32").at("acc").get<double>()
           << "\nacc_norm: " << ref.at("task_block_32").at("acc_norm").get<double>() << "\ncount: 9\n";
  CHECK(text.out == expected.str());
  // Two examples do not fit in 32 tokens and are cut on the left; stderr says so.
  CHECK(text.err.find("left-truncated") != std::string::npos);
}

TEST_CASE("lmforge eval --text reports bits-per-byte and the loss per token") {
  TempDir tmp("lmf_cli_eval_tasks_");
  const json ref = reference().at("text")[1];  // block size 16
  const std::string text = (kFixture / "text.txt").string();
  RunResult r = run_eval("--text " + quote(text) + " --block-size 16 --batch-size 5 --json", tmp.path);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json out = json::parse(r.out);
  CHECK(out.at("text") == text);
  CHECK(out.at("tokens") == ref.at("tokens"));
  CHECK(out.at("bytes") == ref.at("bytes"));
  CHECK(std::abs(out.at("bits_per_byte").get<double>() - ref.at("bits_per_byte").get<double>()) <=
        1e-5 * ref.at("bits_per_byte").get<double>());
  CHECK(std::abs(out.at("loss").get<double>() - ref.at("loss").get<double>()) <= 1e-5 * ref.at("loss").get<double>());
}

TEST_CASE("lmforge eval runs a shard, tasks and a text in one call, one JSON line each") {
  TempDir tmp("lmf_cli_eval_tasks_");
  const std::string task = (kFixture / "task.jsonl").string();
  RunResult r = run_eval("--task " + quote(task) + " --task " + quote(task) + " --text " +
                             quote((kFixture / "text.txt").string()) + " --json",
                         tmp.path);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::istringstream lines(r.out);
  std::string line;
  std::vector<json> objects;
  while (std::getline(lines, line)) objects.push_back(json::parse(line));
  REQUIRE(objects.size() == 3);
  CHECK(objects[0].contains("acc"));
  CHECK(objects[1] == objects[0]);
  CHECK(objects[2].contains("bits_per_byte"));
}

TEST_CASE("lmforge eval refuses bad task files with one line naming the file and line") {
  TempDir tmp("lmf_cli_eval_tasks_");
  const fs::path task = tmp.path / "bad.jsonl";
  const std::string good = R"({"ctx": "The cat sat on the", "endings": ["mat.", "car"], "label": 0})";
  auto with_third_line = [&](const std::string& line) {
    write_file(task, good + "\n\n" + line + "\n" + good + "\n");  // line 2 is blank
    return run_eval("--task " + quote(task.string()), tmp.path);
  };
  const std::string at = task.string() + ":3: ";
  SECTION("malformed JSON") { check_clean_failure(with_third_line("{\"ctx\": \"a\", "), at + "not valid JSON"); }
  SECTION("missing endings") {
    check_clean_failure(with_third_line(R"({"ctx": "a", "label": 0})"), at + "missing key \"endings\"");
  }
  SECTION("missing context") {
    check_clean_failure(with_third_line(R"({"endings": ["a"], "label": 0})"), at + "missing key \"ctx\"");
  }
  SECTION("label out of range") {
    check_clean_failure(with_third_line(R"({"ctx": "a", "endings": ["b", "c"], "label": 4})"),
                        at + "\"label\" 4 is outside [0, 2)");
  }
  SECTION("no endings") {
    check_clean_failure(with_third_line(R"({"ctx": "a", "endings": [], "label": 0})"), at + "\"endings\" is empty");
  }
  SECTION("an empty ending") {
    check_clean_failure(with_third_line(R"({"ctx": "a", "endings": ["b", ""], "label": 0})"),
                        at + "\"endings\"[1] is empty");
  }
  SECTION("an empty file") {
    write_file(task, "\n");
    check_clean_failure(run_eval("--task " + quote(task.string()), tmp.path), task.string() + ": no examples");
  }
  SECTION("a missing file") {
    check_clean_failure(run_eval("--task " + quote((tmp.path / "nope.jsonl").string()), tmp.path),
                        (tmp.path / "nope.jsonl").string());
  }
  SECTION("an ending longer than the window") {
    check_clean_failure(run_eval("--task " + quote((kFixture / "task.jsonl").string()) + " --block-size 8", tmp.path),
                        "task.jsonl:1: ending 1 is 18 tokens, longer than the window of 8");
  }
  SECTION("nothing to evaluate") {
    check_clean_failure(run_eval("", tmp.path), "--data FILE.bin, --task FILE.jsonl or --text FILE");
  }
  SECTION("a checkpoint without a tokenizer") {
    const fs::path bare = tmp.path / "bare";
    fs::create_directories(bare);
    fs::copy_file(kFixture / "config.json", bare / "config.json");
    fs::copy_file(kFixture / "model.safetensors", bare / "model.safetensors");
    RunResult r = run(quote(LMF_CLI) + " eval --checkpoint " + quote(bare.string()) + " --task " +
                          quote((kFixture / "task.jsonl").string()),
                      tmp.path);
    check_clean_failure(r, "has no tokenizer.json");
  }
}
