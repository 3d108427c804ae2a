// eval.tasks and eval.text in a training run: scored at each eval interval and at the end, logged
// in metrics.jsonl with the numbers the library computes for the saved final weights, and refused
// at set-up (naming the key, file and line) when a task file is bad.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "e2e/cli_run.h"
#include "train/word_corpus.h"
#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/train/task_eval.h"
#include "lmforge/train/trainer.h"

namespace fs = std::filesystem;
using namespace lmf::train;
using nlohmann::json;

namespace {

struct Run {
  fs::path dir, corpus, task, text;
};

Run prepare_run(const std::string& name) {
  Run r;
  r.dir = lmf::test::work_dir("task_metrics", name);
  r.corpus = lmf::test::prepare_char_corpus(r.dir, lmf::test::generated_text(200, 5));
  r.task = r.dir / "task.jsonl";
  std::ofstream(r.task) << R"({"ctx": "the quick brown", "endings": ["fox jumps.", "dog far", "today"], "label": 0})" "\n"
                        << R"({"ctx": "a lazy", "endings": ["home", "dog and runs"], "label": 1})" "\n"
                        << R"({"ctx": "the", "endings": ["fox", "runs"], "label": 0})" "\n";
  r.text = r.dir / "text.txt";
  std::ofstream(r.text) << lmf::test::generated_text(6, 99);
  return r;
}

}  // namespace

TEST_CASE("eval.tasks and eval.text are logged at each evaluation and at the end, as the library scores them") {
  const Run r = prepare_run("logged");
  Config c = lmf::test::tiny_run_config(r.dir / "out", r.corpus, 3, 5);
  c.eval.interval = 2;
  c.eval.tasks = {r.task.string()};
  c.eval.text = r.text.string();
  c.validate();
  Trainer(c).fit();

  std::vector<json> task_lines, text_lines;
  std::ifstream in(r.dir / "out" / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    if (j.contains("task")) task_lines.push_back(j);
    if (j.contains("bits_per_byte")) text_lines.push_back(j);
  }
  REQUIRE(task_lines.size() == 3);  // steps 2, 4 and the end (5)
  REQUIRE(text_lines.size() == 3);
  CHECK(task_lines[0].at("step") == 2);
  CHECK(task_lines[1].at("step") == 4);
  CHECK(task_lines[2].at("step") == 5);
  CHECK(task_lines[2].at("task") == r.task.string());
  CHECK(task_lines[2].at("count") == 3);
  CHECK(text_lines[2].at("step") == 5);
  CHECK(text_lines[2].at("text") == r.text.string());
  for (const char* key : {"acc", "acc_norm", "elapsed_s"}) CHECK(task_lines[2].contains(key));
  for (const char* key : {"loss", "tokens", "bytes", "elapsed_s"}) CHECK(text_lines[2].contains(key));

  // The final weights scored directly give the logged end-of-run numbers.
  const auto model = lmf::io::load_model(r.dir / "out" / "final");
  model->eval();
  const auto tokenizer = lmf::data::load_tokenizer((r.corpus / "tokenizer.json").string());
  TaskEvalOptions options;
  options.block_size = 16;
  options.batch_size = 4;
  const ChoiceResult task = evaluate_choice_task(*model, *tokenizer, read_choice_task(r.task), options);
  CHECK(task_lines[2].at("acc").get<double>() == task.acc);
  CHECK(task_lines[2].at("acc_norm").get<double>() == task.acc_norm);
  std::ifstream text_in(r.text);
  const std::string text((std::istreambuf_iterator<char>(text_in)), {});
  const BitsPerByteResult bpb =
      evaluate_bits_per_byte(*model, encode_bits_per_byte(*tokenizer, text, "text"), options);
  CHECK(text_lines[2].at("bits_per_byte").get<double>() == Approx(bpb.bits_per_byte).epsilon(1e-6));
  CHECK(text_lines[2].at("tokens") == bpb.tokens);
  // The character tokenizer has no <|endoftext|>: the first character is context, not predicted.
  CHECK(text_lines[2].at("bytes") == static_cast<int64_t>(text.size()) - 1);
}

TEST_CASE("a bad eval.tasks file stops the run at set-up with the key, file and line") {
  const Run r = prepare_run("bad");
  std::ofstream(r.task, std::ios::app) << R"({"ctx": "a", "endings": ["b"], "label": 3})" "\n";
  Config c = lmf::test::tiny_run_config(r.dir / "out", r.corpus, 3, 5);
  c.eval.tasks = {r.task.string()};
  try {
    Trainer trainer(c);
    FAIL("no error");
  } catch (const lmf::Error& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.find("eval.tasks: " + r.task.string() + ":4: \"label\" 3 is outside [0, 1)") != std::string::npos);
  }
  // An ending longer than the window (model.block_size 16) is found before training starts too.
  std::ofstream(r.task) << R"({"ctx": "a", "endings": ["b", "dog and runs far away"], "label": 0})" "\n";
  CHECK_THROWS_WITH(Trainer(c), Catch::Contains("eval.tasks: " + r.task.string() + ":1: ending 1 is 22 tokens, longer than the window of 16"));
  c.eval.tasks = {};
  c.eval.text = (r.dir / "missing.txt").string();
  CHECK_THROWS_WITH(Trainer(c), Catch::Contains("eval.text") && Catch::Contains("missing.txt"));
}

TEST_CASE("eval.tasks and eval.text parse from YAML, survive to_yaml and take overrides") {
  const std::string yaml = "data:\n  train: x.bin\ntraining:\n  max_steps: 1\n"
                           "eval:\n  tasks: [a.jsonl, dir/b.jsonl]\n  text: held_out.txt\n";
  const Config c = Config::parse(yaml, "cfg.yaml");
  CHECK(c.eval.tasks == std::vector<std::string>{"a.jsonl", "dir/b.jsonl"});
  CHECK(c.eval.text == "held_out.txt");
  const Config again = Config::parse(c.to_yaml(), "resolved.yaml");
  CHECK(again.eval.tasks == c.eval.tasks);
  CHECK(again.eval.text == c.eval.text);
  CHECK(Config::parse(yaml, "cfg.yaml", {"eval.text=other.txt"}).eval.text == "other.txt");
  CHECK(Config().eval.tasks.empty());
  CHECK(Config().eval.text.empty());
  CHECK_THROWS_WITH(Config::parse(yaml + "  task: [c.jsonl]\n", "cfg.yaml"), Catch::Contains("eval.tasks"));
}
