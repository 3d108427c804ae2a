// The trainer's side of eval.tasks / eval.text: the suite built from the config at set-up (every
// file error then, naming the key) and its outcome as metrics.jsonl lines and one progress line.
// Kept out of trainer.cpp so the loop only calls two functions.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/train/config.h"
#include "lmforge/train/task_eval.h"

namespace lmf::train {

/// The suite of `eval`, or null when it names no task and no text. A tokenizer is required then,
/// and every ending must fit in `block_size` tokens.
std::unique_ptr<TaskSuite> make_task_suite(const EvalConfig& eval, const data::Tokenizer* tokenizer,
                                           int64_t block_size);

/// One metrics.jsonl object per task ({"step", "task", "acc", "acc_norm", "count", "elapsed_s"})
/// and one for the text ({"step", "text", "bits_per_byte", "loss", "tokens", "bytes", "elapsed_s"}).
std::vector<std::string> task_metrics_lines(const TaskSuite::Outcome& outcome, int64_t step, double elapsed_s);

/// "step S | task.jsonl acc 0.4000 acc_norm 0.5000 | text.txt bpb 1.2345" for the progress output.
std::string task_metrics_message(const TaskSuite::Outcome& outcome, int64_t step);

}  // namespace lmf::train
