// A small Jinja2 interpreter for Hugging Face chat templates: the subset the published templates
// use, with Jinja2's lexing rules (trim_blocks and lstrip_blocks on, as transformers sets them) and
// Python's value semantics (code-point strings, reference lists, `None`/`True` spellings, repr).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmf::data::jinja {

struct Value;
using List = std::vector<Value>;
struct Dict;
struct Function;

/// A template value as Jinja2 sees it. Lists, dicts and namespaces are shared by reference (as in
/// Python); everything else is copied.
struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Function };
  Kind kind = Kind::Undefined;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0.0;
  std::string text;  // String; for Undefined, the message an error about it gives
  std::shared_ptr<List> list;
  bool tuple = false;  // a List that Python would hold as a tuple (repr only)
  std::shared_ptr<Dict> dict;
  std::shared_ptr<Function> function;

  static Value undefined(std::string why = {});
  static Value none();
  static Value from(bool b);
  static Value from(int64_t i);
  static Value from_int(int64_t i) { return from(i); }
  static Value from(double d);
  static Value from(std::string s);
  static Value from(const char* s) { return from(std::string(s)); }
  static Value from(List items, bool tuple = false);
  static Value new_dict();
  static Value new_namespace();

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_number() const {
    return kind == Kind::Bool || kind == Kind::Int || kind == Kind::Float;
  }
};

/// Insertion-ordered string-keyed mapping (a Python dict, a namespace or a loop object).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value value);
};

/// Positional and keyword arguments of a call.
struct Arguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

/// A callable value: a builtin global, a bound string/dict method, a macro.
struct Function {
  std::string name;
  std::function<Value(const Arguments&)> call;
};

/// Thrown by builtins (and raise_exception); the renderer adds the template name and line.
struct RenderError {
  std::string message;
};

/// A parsed template. Parsing and rendering errors are lmf::Error naming `name` and the line.
class Template {
 public:
  Template(std::string_view source, std::string name);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  /// Renders with `variables` as the context (added to the builtin globals range, dict,
  /// namespace, raise_exception and strftime_now).
  std::string render(const std::vector<std::pair<std::string, Value>>& variables) const;

  struct Node;

 private:
  std::unique_ptr<Node> root_;
  std::string name_;
};

/// Python's str() of a value (Undefined prints as "").
std::string to_str(const Value& value);
/// json.dumps(value, ensure_ascii=False, indent=indent) as transformers' tojson filter does it.
std::string to_json(const Value& value, int indent = -1, bool sort_keys = false);

}  // namespace lmf::data::jinja
