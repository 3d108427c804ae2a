// Evaluation beyond the loss: multiple-choice tasks in HellaSwag's layout scored by the
// log-likelihood of each ending (lm-evaluation-harness's acc and acc_norm), and bits-per-byte of a
// text, which does not depend on the tokenizer. Free functions over any CausalLM and Tokenizer, so
// `lmforge eval`, the trainer's eval.tasks and a researcher's own script compute the same numbers.
// Encoding is separate from scoring: a training run tokenizes its tasks once and scores them at
// every evaluation. The formulas are in docs/evaluation.md.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "lmforge/core/device.h"
#include "lmforge/data/tokenizer.h"
#include "lmforge/nn/causal_lm.h"

namespace lmf::train {

/// One multiple-choice question: a context, its candidate endings and the index of the right one.
struct ChoiceExample {
  std::string context;
  std::vector<std::string> endings;
  int64_t label = 0;
  std::string where;  ///< "FILE:LINE" of the task file it came from, for error messages
};

/// Parses one JSON line of a task file: {"ctx": str, "endings": [str, ...], "label": int}.
/// Instead of "ctx", HellaSwag's "ctx_a" with an optional "ctx_b" is accepted (joined as
/// HellaSwag's own ctx field is: ctx_a + " " + ctx_b, or ctx_a alone when ctx_b is empty);
/// "label" may also be a string of decimal digits (as in the Hugging Face copy of HellaSwag).
/// Refused, with an lmf::Error starting with `where`: malformed JSON, nesting deeper than 64,
/// a missing or mistyped key, no endings, an empty ending, a label outside [0, endings).
ChoiceExample parse_choice_example(std::string_view line, const std::string& where);

/// Every example of a JSONL task file (blank lines skipped); errors name FILE:LINE. Files over
/// 1 GiB and files without an example are refused.
std::vector<ChoiceExample> read_choice_task(const std::filesystem::path& path);

/// The token that conditions a prediction with nothing before it, as lm-evaluation-harness's
/// prefix_token_id: the tokenizer's bos token when it has one (Hugging Face tokenizers),
/// otherwise its end-of-text / eos token; -1 when it has neither.
int32_t prefix_token(const data::Tokenizer& tokenizer);

/// The tokens of one (context, ending) pair, as lm-evaluation-harness forms a loglikelihood
/// request: the continuation is " " + ending; whitespace at the end of the context moves to the
/// front of the continuation; then whole = encode(context + continuation), context tokens =
/// encode(context), continuation tokens = whole[len(context tokens):]. An empty context (or one
/// that encodes to no tokens) is the prefix token alone.
struct ChoiceRequest {
  std::vector<int32_t> context;
  std::vector<int32_t> continuation;
};

/// An example with every ending encoded.
struct EncodedChoice {
  std::vector<ChoiceRequest> requests;  ///< one per ending
  std::vector<int64_t> lengths;         ///< acc_norm's divisor: code points of each ending
  int64_t label = 0;
  std::string where;
};

/// Encodes every ending of `example`; errors (no prefix token for an empty context, an ending
/// that encodes to no continuation token) start with example.where.
EncodedChoice encode_choice(const data::Tokenizer& tokenizer, const ChoiceExample& example);

/// Refuses (an lmf::Error starting with example.where) an ending whose continuation does not fit
/// in `block_size` tokens; score_choice would refuse it too, but only when it comes to it.
void check_choice_window(const EncodedChoice& example, int64_t block_size);

/// Options shared by the task scorers.
struct TaskEvalOptions {
  Device device = Device::cpu();  ///< where the model's parameters are
  int64_t block_size = 0;         ///< window in tokens; 0: the model's context_size()
  int64_t batch_size = 8;         ///< windows per forward (bits-per-byte)
  /// Called after each example or batch of windows with (done, total); may be empty.
  std::function<void(int64_t, int64_t)> progress;
};

/// The scores of one example.
struct ChoiceScore {
  std::vector<double> loglik;  ///< per ending: sum over continuation tokens of log p, in nats
  std::vector<int64_t> tokens; ///< per ending: continuation tokens scored
  int64_t prediction = 0;      ///< argmax of loglik (the first on ties)
  int64_t prediction_norm = 0; ///< argmax of loglik / lengths (the first on ties)
  bool truncated = false;      ///< the context was cut on the left to fit the window
};

/// Scores every ending of one example in one forward of (endings, T) right-padded sequences:
/// context + continuation, left-truncated to the window, log-probabilities of the continuation
/// tokens read from the logits with a float64 log-softmax. A continuation longer than the window
/// is an lmf::Error naming the example.
ChoiceScore score_choice(const nn::CausalLM& model, const EncodedChoice& example,
                         const TaskEvalOptions& options);

struct ChoiceResult {
  double acc = 0;       ///< fraction of examples whose prediction is the label
  double acc_norm = 0;  ///< the same for prediction_norm
  int64_t count = 0;
  int64_t truncated = 0;  ///< examples whose context was left-truncated
  std::vector<ChoiceScore> scores;  ///< per example, in file order
};

/// Scores already encoded examples (the model in eval mode, no gradients recorded).
ChoiceResult evaluate_choices(const nn::CausalLM& model, const std::vector<EncodedChoice>& examples,
                              const TaskEvalOptions& options);
/// Encodes and scores.
ChoiceResult evaluate_choice_task(const nn::CausalLM& model, const data::Tokenizer& tokenizer,
                                  const std::vector<ChoiceExample>& examples,
                                  const TaskEvalOptions& options);

/// A text tokenized for bits-per-byte: the prefix token followed by the text's tokens (when the
/// tokenizer has no prefix token, the first text token starts the sequence and is not predicted,
/// and its bytes are not counted).
struct BitsPerByteText {
  std::vector<int32_t> sequence;  ///< predicted: sequence[1:]
  int64_t bytes = 0;              ///< UTF-8 bytes of the predicted text
};
BitsPerByteText encode_bits_per_byte(const data::Tokenizer& tokenizer, std::string_view text,
                                     const std::string& where);

struct BitsPerByteResult {
  double nll = 0;            ///< sum over predicted tokens of -log p, in nats
  int64_t tokens = 0;        ///< predicted tokens
  int64_t bytes = 0;
  double loss = 0;           ///< nll / tokens: mean cross-entropy per token
  double bits_per_byte = 0;  ///< nll / (ln 2 · bytes)
  int64_t windows = 0;
};

/// Every token of the text predicted exactly once, in windows of block_size tokens: window k
/// predicts tokens [k·T, k·T + T); the last window, when shorter, is taken full-length ending at
/// the text's end and scores only its new tokens (lm-evaluation-harness's rolling windows).
BitsPerByteResult evaluate_bits_per_byte(const nn::CausalLM& model, const BitsPerByteText& text,
                                         const TaskEvalOptions& options);

/// The eval.tasks and eval.text of a training run: read, validated and tokenized once (every error
/// at construction), scored on demand.
class TaskSuite {
 public:
  TaskSuite(const std::vector<std::string>& task_files, const std::string& text_file,
            const data::Tokenizer& tokenizer);
  bool empty() const { return tasks_.empty() && text_file_.empty(); }

  struct TaskOutcome {
    std::string file;
    ChoiceResult result;
  };
  struct Outcome {
    std::vector<TaskOutcome> tasks;
    bool has_text = false;
    std::string text_file;
    BitsPerByteResult text;
  };
  /// Refuses (an lmf::Error naming the example) an ending that does not fit in `block_size` tokens,
  /// so a run finds it at set-up rather than at its first evaluation.
  void check_window(int64_t block_size) const;
  /// Scores every task and the text.
  Outcome run(const nn::CausalLM& model, const TaskEvalOptions& options) const;

 private:
  struct Task {
    std::string file;
    std::vector<EncodedChoice> examples;
  };
  std::vector<Task> tasks_;
  std::string text_file_;
  BitsPerByteText text_;
};

}  // namespace lmf::train
