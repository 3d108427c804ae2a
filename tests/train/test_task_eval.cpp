// Multiple-choice scoring and bits-per-byte against an independent reference
// (tests/reference/make_task_eval_fixtures.py: lm-evaluation-harness's request forming, acc,
// acc_norm and rolling windows, with float64 PyTorch GPT-2 and Llama forwards on the same weights).
// Token ids and predictions must be equal; log-likelihoods within the float32 forward's error.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lmforge/core/error.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/io/checkpoint.h"
#include "lmforge/train/task_eval.h"

namespace fs = std::filesystem;
using namespace lmf::train;
using nlohmann::json;

namespace {

fs::path fixture(const std::string& name) {
  return fs::path(LMF_SOURCE_DIR) / "tests" / "reference" / "fixtures" / "task_eval" / name;
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return json::parse(in);
}

// Log-likelihoods are sums of up to 27 token log-probabilities of magnitude ~6 from a float32
// forward: float32 rounding of the logits (~1e-6 relative of values ~10) gives ~1e-5 per token at
// worst. 1e-4 absolute plus 1e-6 relative sits above that; a wrong token, a shifted position or a
// missing log-softmax term moves a sum by 0.1 or more.
bool close(double ours, double reference) { return std::abs(ours - reference) <= 1e-4 + 1e-6 * std::abs(reference); }

std::unique_ptr<lmf::data::Tokenizer> fixture_tokenizer(const std::string& name) {
  const fs::path dir = fixture(name);
  if (fs::exists(dir / "tokenizer.json")) return lmf::data::load_tokenizer((dir / "tokenizer.json").string());
  return lmf::data::load_tokenizer(dir.string());
}

void check_task(const std::string& name, const json& ref, int64_t block_size) {
  INFO(name << ", block size " << block_size);
  const auto model = lmf::io::load_model(fixture(name));
  model->eval();
  const auto tokenizer = fixture_tokenizer(name);
  const auto examples = read_choice_task(fixture(name) / "task.jsonl");
  REQUIRE(examples.size() == ref.at("examples").size());
  TaskEvalOptions options;
  options.block_size = block_size;
  int64_t progress_calls = 0;
  options.progress = [&](int64_t done, int64_t total) {
    ++progress_calls;
    CHECK(done == progress_calls);
    CHECK(total == static_cast<int64_t>(examples.size()));
  };
  std::vector<EncodedChoice> encoded;
  for (const auto& e : examples) encoded.push_back(encode_choice(*tokenizer, e));
  const ChoiceResult result = evaluate_choices(*model, encoded, options);
  double worst = 0;
  for (std::size_t i = 0; i < examples.size(); ++i) {
    const json& r = ref.at("examples")[i];
    INFO("example " << i << " (" << examples[i].where << ")");
    for (std::size_t k = 0; k < examples[i].endings.size(); ++k) {
      INFO("ending " << k);
      CHECK(encoded[i].requests[k].context == r.at("requests")[k].at("context").get<std::vector<int32_t>>());
      CHECK(encoded[i].requests[k].continuation ==
            r.at("requests")[k].at("continuation").get<std::vector<int32_t>>());
      const double reference = r.at("loglik")[k].get<double>();
      const double ours = result.scores[i].loglik[k];
      INFO(std::setprecision(12) << "lmforge " << ours << " vs PyTorch " << reference);
      CHECK(close(ours, reference));
      worst = std::max(worst, std::abs(ours - reference));
    }
    CHECK(result.scores[i].prediction == r.at("prediction").get<int64_t>());
    CHECK(result.scores[i].prediction_norm == r.at("prediction_norm").get<int64_t>());
    CHECK(result.scores[i].truncated == r.at("truncated").get<bool>());
  }
  CHECK(result.count == ref.at("count").get<int64_t>());
  CHECK(result.acc == ref.at("acc").get<double>());
  CHECK(result.acc_norm == ref.at("acc_norm").get<double>());
  CHECK(progress_calls == static_cast<int64_t>(examples.size()));
  WARN(name << " block " << block_size << ": largest log-likelihood difference " << worst);
}

void check_text(const std::string& name, const json& ref, int64_t batch_size) {
  const auto model = lmf::io::load_model(fixture(name));
  model->eval();
  const auto tokenizer = fixture_tokenizer(name);
  std::ifstream in(fixture(name) / "text.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  const BitsPerByteText encoded = encode_bits_per_byte(*tokenizer, text, "text.txt");
  std::vector<int32_t> expected = {ref.at("eot").get<int32_t>()};
  const auto ids = ref.at("ids").get<std::vector<int32_t>>();
  expected.insert(expected.end(), ids.begin(), ids.end());
  CHECK(encoded.sequence == expected);
  TaskEvalOptions options;
  options.block_size = ref.at("block_size").get<int64_t>();
  options.batch_size = batch_size;
  const BitsPerByteResult r = evaluate_bits_per_byte(*model, encoded, options);
  INFO(name << " block " << options.block_size << " batch " << batch_size << std::setprecision(12) << ": bpb "
            << r.bits_per_byte << " vs " << ref.at("bits_per_byte").get<double>());
  CHECK(r.tokens == ref.at("tokens").get<int64_t>());
  CHECK(r.bytes == ref.at("bytes").get<int64_t>());
  CHECK(r.windows == (r.tokens + options.block_size - 1) / options.block_size);
  // A mean over up to 8·48 tokens of float32 cross-entropies: ~1e-6 relative.
  CHECK(std::abs(r.nll - ref.at("nll").get<double>()) <= 1e-5 * ref.at("nll").get<double>());
  CHECK(std::abs(r.bits_per_byte - ref.at("bits_per_byte").get<double>()) <= 1e-5 * ref.at("bits_per_byte").get<double>());
  CHECK(std::abs(r.loss - ref.at("loss").get<double>()) <= 1e-5 * ref.at("loss").get<double>());
  // The definition, from our own totals.
  CHECK(r.bits_per_byte == Approx(r.nll / (std::log(2.0) * static_cast<double>(r.bytes))).epsilon(1e-12));
}

}  // namespace

TEST_CASE("multiple-choice scores of a GPT-2 equal lm-evaluation-harness's computed in PyTorch") {
  const json ref = read_json(fixture("gpt2") / "reference.json");
  check_task("gpt2", ref.at("task"), 0);  // the model's context, 48
  check_task("gpt2", ref.at("task_block_32"), 32);
}

TEST_CASE("multiple-choice scores of a Llama-style model with a character tokenizer equal the reference") {
  check_task("llama", read_json(fixture("llama") / "reference.json").at("task"), 0);
}

TEST_CASE("bits-per-byte of a text equals its definition computed by the reference") {
  const json ref = read_json(fixture("gpt2") / "reference.json");
  for (const json& case_ref : ref.at("text")) {
    json with_eot = case_ref;
    with_eot["eot"] = ref.at("eot");
    check_text("gpt2", with_eot, 8);
    check_text("gpt2", with_eot, 3);  // a batch that ends mid-way through the windows
  }
  const json llama = read_json(fixture("llama") / "reference.json");
  json llama_text = llama.at("text")[0];
  llama_text["eot"] = llama.at("eot");
  check_text("llama", llama_text, 2);
}

TEST_CASE("bits-per-byte without a prefix token skips the first token and its bytes") {
  // A character tokenizer without <|endoftext|>: nothing can condition the first character.
  const auto tokenizer = lmf::data::CharTokenizer::from_text("abc\xc3\xa9");
  const BitsPerByteText t = encode_bits_per_byte(tokenizer, "\xc3\xa9" "abca", "x");
  CHECK(t.sequence.size() == 5);
  CHECK(t.bytes == 4);  // 6 bytes less the 2 of the unpredicted é
}

TEST_CASE("task lines with bad JSON, missing keys, bad labels or empty endings are refused with FILE:LINE") {
  auto message = [](const std::string& line) {
    try {
      parse_choice_example(line, "t.jsonl:7");
    } catch (const lmf::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto refused = [&](const std::string& line, const std::string& says) {
    const std::string m = message(line);
    INFO(line << " -> " << m);
    CHECK(m.rfind("t.jsonl:7: ", 0) == 0);
    CHECK(m.find(says) != std::string::npos);
    CHECK(m.find('\n') == std::string::npos);
  };
  refused("{\"ctx\": \"a\", \"endings\": [\"b\"], \"label\": 0", "not valid JSON");
  refused("[1, 2]", "expected a JSON object");
  refused("{\"endings\": [\"b\"], \"label\": 0}", "\"ctx\"");
  refused("{\"ctx\": 3, \"endings\": [\"b\"], \"label\": 0}", "\"ctx\" must be a string");
  refused("{\"ctx\": \"a\", \"label\": 0}", "missing key \"endings\"");
  refused("{\"ctx\": \"a\", \"endings\": \"b\", \"label\": 0}", "\"endings\" must be an array");
  refused("{\"ctx\": \"a\", \"endings\": [], \"label\": 0}", "\"endings\" is empty");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\", \"\"], \"label\": 0}", "\"endings\"[1] is empty");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\", 4], \"label\": 0}", "\"endings\"[1] must be a string");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\"]}", "missing key \"label\"");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": 2}", "outside [0, 2)");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": -1}", "outside [0, 2)");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\"], \"label\": 0.5}", "\"label\" must be an integer");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\"], \"label\": \"\"}", "\"label\" must be an integer");
  refused(std::string(100, '[') + std::string(100, ']'), "nested deeper");

  const ChoiceExample raw = parse_choice_example(
      R"({"ctx_a": "A man sits.", "ctx_b": "he", "endings": ["x", "y"], "label": "1"})", "w");
  CHECK(raw.context == "A man sits. he");
  CHECK(raw.label == 1);
  CHECK(parse_choice_example(R"({"ctx_a": "A man sits.", "ctx_b": "", "endings": ["x"], "label": 0})", "w").context ==
        "A man sits.");
}

TEST_CASE("a continuation longer than the window is an error naming the example") {
  const auto model = lmf::io::load_model(fixture("gpt2"));
  const auto tokenizer = fixture_tokenizer("gpt2");
  const auto examples = read_choice_task(fixture("gpt2") / "task.jsonl");
  TaskEvalOptions options;
  options.block_size = 8;
  try {
    evaluate_choice_task(*model, *tokenizer, examples, options);
    FAIL("no error");
  } catch (const lmf::Error& e) {
    CHECK(std::string(e.what()).find("task.jsonl:1: ending 1 is 18 tokens, longer than the window of 8") !=
          std::string::npos);
  }
}
