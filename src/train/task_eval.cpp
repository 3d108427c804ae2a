// Multiple-choice tasks and bits-per-byte (see task_eval.h and docs/evaluation.md). Request
// forming copies lm-evaluation-harness's rules exactly (whitespace moved to the continuation, the
// continuation cut from the encoding of the whole string), since a different split of the same
// text changes the numbers; log-probabilities are summed in double on the host.
#include "lmforge/train/task_eval.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "io/safe_file.h"
#include "io/untrusted_json.h"
#include "lmforge/autograd.h"
#include "lmforge/core/error.h"
#include "lmforge/ops.h"

namespace lmf::train {

namespace {

using json = nlohmann::json;

constexpr std::uint64_t kMaxTaskFileBytes = std::uint64_t{1} << 30;
constexpr std::uint64_t kMaxTextFileBytes = std::uint64_t{1} << 30;

int64_t code_points(std::string_view s) {
  return std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string string_key(const json& doc, const char* key, const std::string& where) {
  const auto it = doc.find(key);
  LMF_CHECK(it != doc.end(), where, ": missing key \"", key, "\"");
  LMF_CHECK(it->is_string(), where, ": \"", key, "\" must be a string, got ", io::json_brief(*it));
  return it->get<std::string>();
}

int64_t parse_label(const json& value, const std::string& where) {
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_string()) {
    const std::string s = value.get<std::string>();
    const bool digits = !s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
    LMF_CHECK(digits, where, ": \"label\" must be an integer, got ", io::json_brief(value));
    return std::stoll(s);
  }
  throw Error(str(where, ": \"label\" must be an integer, got ", io::json_brief(value)));
}

// Window inputs and targets of one forward, as (rows, T) row-major vectors.
struct WindowBatch {
  std::vector<int32_t> inputs;
  std::vector<int32_t> targets;
  int64_t rows = 0;
  int64_t scored = 0;
};

}  // namespace

ChoiceExample parse_choice_example(std::string_view line, const std::string& where) {
  LMF_CHECK(io::json_nesting_depth(line) <= io::kMaxJsonDepth, where, ": nested deeper than ",
            io::kMaxJsonDepth, " levels");
  const json doc = io::try_parse_untrusted_json(line);
  LMF_CHECK(!doc.is_discarded(), where, ": not valid JSON");
  LMF_CHECK(doc.is_object(), where, ": expected a JSON object {\"ctx\", \"endings\", \"label\"}, got ",
            io::json_brief(doc));
  ChoiceExample example;
  example.where = where;
  if (doc.contains("ctx")) {
    example.context = string_key(doc, "ctx", where);
  } else {
    LMF_CHECK(doc.contains("ctx_a"), where, ": missing key \"ctx\" (or HellaSwag's \"ctx_a\")");
    example.context = string_key(doc, "ctx_a", where);
    const std::string b = doc.contains("ctx_b") ? string_key(doc, "ctx_b", where) : std::string();
    if (!b.empty()) example.context += " " + b;
  }
  const auto endings = doc.find("endings");
  LMF_CHECK(endings != doc.end(), where, ": missing key \"endings\"");
  LMF_CHECK(endings->is_array(), where, ": \"endings\" must be an array of strings, got ", io::json_brief(*endings));
  LMF_CHECK(!endings->empty(), where, ": \"endings\" is empty");
  for (std::size_t i = 0; i < endings->size(); ++i) {
    const json& e = (*endings)[i];
    LMF_CHECK(e.is_string(), where, ": \"endings\"[", i, "] must be a string, got ", io::json_brief(e));
    LMF_CHECK(!e.get_ref<const std::string&>().empty(), where, ": \"endings\"[", i, "] is empty");
    example.endings.push_back(e.get<std::string>());
  }
  const auto label = doc.find("label");
  LMF_CHECK(label != doc.end(), where, ": missing key \"label\"");
  example.label = parse_label(*label, where);
  LMF_CHECK(example.label >= 0 && example.label < static_cast<int64_t>(example.endings.size()), where,
            ": \"label\" ", example.label, " is outside [0, ", example.endings.size(), ") (",
            example.endings.size(), " endings)");
  return example;
}

std::vector<ChoiceExample> read_choice_task(const std::filesystem::path& path) {
  const std::string name = io::clip(path.string());
  const std::string text = io::read_regular_file(path, kMaxTaskFileBytes, str("task file ", name));
  std::vector<ChoiceExample> examples;
  std::size_t begin = 0;
  int64_t line_no = 0;
  while (begin < text.size()) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    std::string_view line(text.data() + begin, end - begin);
    begin = end + 1;
    if (std::all_of(line.begin(), line.end(), is_ascii_space)) continue;
    examples.push_back(parse_choice_example(line, str(name, ":", line_no)));
  }
  LMF_CHECK(!examples.empty(), name, ": no examples (expected one JSON object per line)");
  return examples;
}

int32_t prefix_token(const data::Tokenizer& tokenizer) {
  if (const auto* hf = dynamic_cast<const data::HFTokenizer*>(&tokenizer)) {
    if (hf->bos_id() >= 0) return hf->bos_id();
    return hf->eos_id() >= 0 ? hf->eos_id() : hf->eot_id();
  }
  return tokenizer.eot_id();
}

EncodedChoice encode_choice(const data::Tokenizer& tokenizer, const ChoiceExample& example) {
  EncodedChoice out;
  out.label = example.label;
  out.where = example.where;
  const int32_t prefix = prefix_token(tokenizer);
  std::string context = example.context;
  std::size_t keep = context.size();
  while (keep > 0 && is_ascii_space(context[keep - 1])) --keep;
  const std::string moved = context.substr(keep);
  context.resize(keep);
  for (const std::string& ending : example.endings) {
    ChoiceRequest request;
    const std::string continuation = moved + " " + ending;
    if (example.context.empty()) {
      request.continuation = tokenizer.encode(continuation);
    } else {
      const std::vector<int32_t> whole = tokenizer.encode(context + continuation);
      request.context = tokenizer.encode(context);
      const std::size_t split = std::min(request.context.size(), whole.size());
      request.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(split), whole.end());
    }
    if (request.context.empty()) {
      LMF_CHECK(prefix >= 0, example.where, ": the context is empty and the tokenizer has no bos, eos or ",
                "<|endoftext|> token to condition the ending on");
      request.context.push_back(prefix);
    }
    LMF_CHECK(!request.continuation.empty(), example.where, ": an ending encodes to no token after its context");
    out.requests.push_back(std::move(request));
    out.lengths.push_back(code_points(ending));
  }
  return out;
}

namespace {

int64_t window_of(const nn::CausalLM& model, const TaskEvalOptions& options) {
  const int64_t context = model.context_size();
  const int64_t T = options.block_size == 0 ? context : options.block_size;
  LMF_CHECK(T > 0 && T <= context, "block size ", T, " must be in [1, ", context, "] (the model's context)");
  return T;
}

// -log p(target) from one row of logits, in double.
double token_nll(const float* logits, int64_t V, int32_t target) {
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t v = 0; v < V; ++v) top = std::max(top, static_cast<double>(logits[v]));
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[v]) - top);
  return top + std::log(sum) - static_cast<double>(logits[target]);
}

int64_t first_argmax(const std::vector<double>& values) {
  return std::max_element(values.begin(), values.end()) - values.begin();  // the first of equals
}

}  // namespace

void check_choice_window(const EncodedChoice& example, int64_t block_size) {
  for (std::size_t k = 0; k < example.requests.size(); ++k) {
    const std::size_t n = example.requests[k].continuation.size();
    LMF_CHECK(static_cast<int64_t>(n) <= block_size, example.where, ": ending ", k, " is ", n,
              " tokens, longer than the window of ", block_size, " tokens");
  }
}

ChoiceScore score_choice(const nn::CausalLM& model, const EncodedChoice& example,
                         const TaskEvalOptions& options) {
  const int64_t T = window_of(model, options);
  const int64_t B = static_cast<int64_t>(example.requests.size());
  const int64_t vocab = model.vocab_size();
  ChoiceScore score;
  // Each row: the last (up to T) tokens of context + continuation without its final token.
  std::vector<int64_t> starts(B), lengths(B);
  int64_t width = 0;
  check_choice_window(example, T);
  for (int64_t b = 0; b < B; ++b) {
    const ChoiceRequest& r = example.requests[b];
    const int64_t n = static_cast<int64_t>(r.context.size() + r.continuation.size()) - 1;
    starts[b] = std::max<int64_t>(0, n - T);
    lengths[b] = n - starts[b];
    if (starts[b] > 0) score.truncated = true;
    width = std::max(width, lengths[b]);
  }
  std::vector<int32_t> inputs(static_cast<std::size_t>(B * width), 0);  // padding after: causal, never seen
  for (int64_t b = 0; b < B; ++b) {
    const ChoiceRequest& r = example.requests[b];
    for (int64_t t = 0; t < lengths[b]; ++t) {
      const int64_t i = starts[b] + t;
      const std::size_t nc = r.context.size();
      const int32_t id = i < static_cast<int64_t>(nc) ? r.context[i] : r.continuation[i - nc];
      LMF_CHECK(id >= 0 && id < vocab, example.where, ": token ", id, " is outside the model's vocabulary (",
                vocab, ")");
      inputs[b * width + t] = id;
    }
    for (const int32_t id : r.continuation)
      LMF_CHECK(id >= 0 && id < vocab, example.where, ": token ", id, " is outside the model's vocabulary (",
                vocab, ")");
  }
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(inputs, {B, width}).to(options.device);  // (B, T)
  const Tensor logits = model.forward(ids);                                        // (B, T, V)
  const int64_t V = logits.shape().back();
  for (int64_t b = 0; b < B; ++b) {
    const ChoiceRequest& r = example.requests[b];
    const int64_t n = static_cast<int64_t>(r.continuation.size());
    // The continuation's tokens are the targets of the row's last n positions.
    const Tensor rows = slice(slice(logits, 0, b, b + 1), 1, lengths[b] - n, lengths[b]);  // (1, n, V)
    const std::vector<float> values = rows.to(Device::cpu()).to(DType::f32).contiguous_copy().to_vector();
    double loglik = 0;
    for (int64_t j = 0; j < n; ++j) loglik -= token_nll(values.data() + j * V, V, r.continuation[j]);
    score.loglik.push_back(loglik);
    score.tokens.push_back(n);
  }
  std::vector<double> normalised(B);
  for (int64_t b = 0; b < B; ++b) normalised[b] = score.loglik[b] / static_cast<double>(example.lengths[b]);
  score.prediction = first_argmax(score.loglik);
  score.prediction_norm = first_argmax(normalised);
  return score;
}

ChoiceResult evaluate_choices(const nn::CausalLM& model, const std::vector<EncodedChoice>& examples,
                              const TaskEvalOptions& options) {
  ChoiceResult result;
  int64_t right = 0, right_norm = 0;
  for (const EncodedChoice& example : examples) {
    ChoiceScore s = score_choice(model, example, options);
    right += s.prediction == example.label;
    right_norm += s.prediction_norm == example.label;
    result.truncated += s.truncated;
    result.scores.push_back(std::move(s));
    ++result.count;
    if (options.progress) options.progress(result.count, static_cast<int64_t>(examples.size()));
  }
  if (result.count > 0) {
    result.acc = static_cast<double>(right) / static_cast<double>(result.count);
    result.acc_norm = static_cast<double>(right_norm) / static_cast<double>(result.count);
  }
  return result;
}

ChoiceResult evaluate_choice_task(const nn::CausalLM& model, const data::Tokenizer& tokenizer,
                                  const std::vector<ChoiceExample>& examples,
                                  const TaskEvalOptions& options) {
  std::vector<EncodedChoice> encoded;
  encoded.reserve(examples.size());
  for (const ChoiceExample& e : examples) encoded.push_back(encode_choice(tokenizer, e));
  return evaluate_choices(model, encoded, options);
}

BitsPerByteText encode_bits_per_byte(const data::Tokenizer& tokenizer, std::string_view text,
                                     const std::string& where) {
  BitsPerByteText out;
  const std::vector<int32_t> tokens = tokenizer.encode(text);
  const int32_t prefix = prefix_token(tokenizer);
  if (prefix >= 0) out.sequence.push_back(prefix);
  out.sequence.insert(out.sequence.end(), tokens.begin(), tokens.end());
  out.bytes = static_cast<int64_t>(text.size());
  if (prefix < 0 && !tokens.empty()) out.bytes -= static_cast<int64_t>(tokenizer.decode({tokens[0]}).size());
  LMF_CHECK(out.sequence.size() >= 2 && out.bytes > 0, where, ": the text has no token to predict (",
            tokens.size(), " tokens", prefix < 0 ? "; the tokenizer has no bos/eos token, so the first is not predicted" : "",
            ")");
  return out;
}

BitsPerByteResult evaluate_bits_per_byte(const nn::CausalLM& model, const BitsPerByteText& text,
                                         const TaskEvalOptions& options) {
  LMF_CHECK(options.batch_size > 0, "batch size must be positive, got ", options.batch_size);
  const int64_t T = window_of(model, options);
  const int64_t vocab = model.vocab_size();
  const std::vector<int32_t>& s = text.sequence;
  const int64_t predicted = static_cast<int64_t>(s.size()) - 1;
  for (std::size_t i = 0; i < s.size(); ++i)
    LMF_CHECK(s[i] >= 0 && s[i] < vocab, "token ", s[i], " at position ", i,
              " is outside the model's vocabulary (vocab_size ", vocab, ")");
  // Window k scores targets s[1 + k·T, 1 + k·T + T); a short last window is moved left to full
  // length and scores only the targets not scored before (the rest get ignore_index -1).
  const int64_t width = std::min(T, predicted);
  const int64_t windows = (predicted + width - 1) / width;
  BitsPerByteResult result;
  NoGradGuard no_grad;
  for (int64_t first = 0; first < windows; first += options.batch_size) {
    const int64_t rows = std::min(options.batch_size, windows - first);
    std::vector<int32_t> inputs(static_cast<std::size_t>(rows * width));
    std::vector<int32_t> targets(static_cast<std::size_t>(rows * width), -1);
    int64_t scored = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t k = first + r;
      const int64_t begin = std::min(k * width, predicted - width);  // inputs s[begin, begin + width)
      const int64_t new_from = k * width;                            // first target not scored before
      for (int64_t t = 0; t < width; ++t) {
        inputs[r * width + t] = s[begin + t];
        if (begin + t >= new_from) targets[r * width + t] = s[begin + t + 1], ++scored;
      }
    }
    const Tensor ids = Tensor::from_vector(inputs, {rows, width}).to(options.device);   // (B, T)
    const Tensor next = Tensor::from_vector(targets, {rows, width}).to(options.device);  // (B, T)
    const double mean = model.forward_with_loss(ids, next, -1).loss.item();
    result.nll += mean * static_cast<double>(scored);
    result.tokens += scored;
    result.windows += rows;
    if (options.progress) options.progress(result.windows, windows);
  }
  result.bytes = text.bytes;
  result.loss = result.nll / static_cast<double>(result.tokens);
  result.bits_per_byte = result.nll / (std::log(2.0) * static_cast<double>(result.bytes));
  return result;
}

TaskSuite::TaskSuite(const std::vector<std::string>& task_files, const std::string& text_file,
                     const data::Tokenizer& tokenizer)
    : text_file_(text_file) {
  for (const std::string& file : task_files) {
    Task task{file, {}};
    for (const ChoiceExample& e : read_choice_task(file)) task.examples.push_back(encode_choice(tokenizer, e));
    tasks_.push_back(std::move(task));
  }
  if (!text_file.empty()) {
    const std::string text = io::read_regular_file(text_file, kMaxTextFileBytes, str("eval.text ", io::clip(text_file)));
    text_ = encode_bits_per_byte(tokenizer, text, io::clip(text_file));
  }
}

void TaskSuite::check_window(int64_t block_size) const {
  for (const Task& task : tasks_)
    for (const EncodedChoice& e : task.examples) check_choice_window(e, block_size);
}

TaskSuite::Outcome TaskSuite::run(const nn::CausalLM& model, const TaskEvalOptions& options) const {
  Outcome outcome;
  for (const Task& task : tasks_) outcome.tasks.push_back({task.file, evaluate_choices(model, task.examples, options)});
  if (!text_file_.empty()) {
    outcome.has_text = true;
    outcome.text_file = text_file_;
    outcome.text = evaluate_bits_per_byte(model, text_, options);
  }
  return outcome;
}

}  // namespace lmf::train
