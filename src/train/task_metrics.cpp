// eval.tasks / eval.text for the trainer (see task_metrics.h).
#include "train/task_metrics.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "lmforge/core/error.h"

namespace lmf::train {

std::unique_ptr<TaskSuite> make_task_suite(const EvalConfig& eval, const data::Tokenizer* tokenizer,
                                           int64_t block_size) {
  if (eval.tasks.empty() && eval.text.empty()) return nullptr;
  LMF_CHECK(tokenizer != nullptr, eval.tasks.empty() ? "eval.text" : "eval.tasks",
            ": needs a tokenizer (set data.tokenizer, or point data.train at a prepared directory)");
  try {
    auto suite = std::make_unique<TaskSuite>(eval.tasks, eval.text, *tokenizer);
    suite->check_window(block_size);
    return suite;
  } catch (const Error& e) {
    throw Error(str(eval.tasks.empty() ? "eval.text: " : "eval.tasks: ", e.what()));
  }
}

std::vector<std::string> task_metrics_lines(const TaskSuite::Outcome& outcome, int64_t step, double elapsed_s) {
  using nlohmann::json;
  const auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  std::vector<std::string> lines;
  for (const auto& t : outcome.tasks)
    lines.push_back(dump({{"step", step}, {"task", t.file}, {"acc", t.result.acc}, {"acc_norm", t.result.acc_norm},
                          {"count", t.result.count}, {"elapsed_s", elapsed_s}}));
  if (outcome.has_text)
    lines.push_back(dump({{"step", step}, {"text", outcome.text_file}, {"bits_per_byte", outcome.text.bits_per_byte},
                          {"loss", outcome.text.loss}, {"tokens", outcome.text.tokens}, {"bytes", outcome.text.bytes},
                          {"elapsed_s", elapsed_s}}));
  return lines;
}

std::string task_metrics_message(const TaskSuite::Outcome& outcome, int64_t step) {
  namespace fs = std::filesystem;
  std::string line = fmt::format("step {}", step);
  for (const auto& t : outcome.tasks)
    line += fmt::format(" | {} acc {:.4f} acc_norm {:.4f}", fs::path(t.file).filename().string(), t.result.acc,
                        t.result.acc_norm);
  if (outcome.has_text)
    line += fmt::format(" | {} bpb {:.4f}", fs::path(outcome.text_file).filename().string(),
                        outcome.text.bits_per_byte);
  return line;
}

}  // namespace lmf::train
