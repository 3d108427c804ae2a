// The Jinja2 subset of Hugging Face chat templates (see jinja.h). Three stages: a lexer that
// reproduces Jinja2's whitespace rules exactly (they decide every byte of the output), a recursive
// descent parser with Jinja2's operator precedence, and a tree-walking renderer with Python value
// semantics. Errors carry the template line of the node being evaluated.
#include "data/jinja.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <set>

#include "lmforge/core/error.h"

namespace lmf::data::jinja {

// ---------------------------------------------------------------------------------------------
// Unicode: Python strings are sequences of code points; bytes that are not UTF-8 are kept as
// lone code points U+DC80..U+DCFF (Python's surrogateescape) so that nothing is ever lost.
namespace {

std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto b0 = static_cast<unsigned char>(s[i]);
    std::size_t n = b0 < 0x80 ? 1 : b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
    bool ok = n > 0 && i + n <= s.size();
    uint32_t cp = n == 1 ? b0 : (b0 & (0x7F >> n));
    for (std::size_t k = 1; ok && k < n; ++k) {
      auto b = static_cast<unsigned char>(s[i + k]);
      ok = (b & 0xC0) == 0x80;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (!ok) {
      out.push_back(0xDC00 + b0);
      i += 1;
    } else {
      out.push_back(cp);
      i += n;
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp >= 0xDC80 && cp <= 0xDCFF) {
    out.push_back(static_cast<char>(cp - 0xDC00));
  } else if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (uint32_t cp : s) append_utf8(out, cp);
  return out;
}

// str.isspace(): what Python's strip()/split() and the regex \s of Jinja2's lexer remove.
bool is_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python's str.strip family; `chars` null means whitespace.
std::string strip(std::string_view s, const std::string* chars, bool left, bool right) {
  std::u32string text = decode(s);
  std::u32string set = chars ? decode(*chars) : std::u32string();
  auto drop = [&](uint32_t c) {
    return chars ? set.find(c) != std::u32string::npos : is_space(c);
  };
  std::size_t begin = 0, end = text.size();
  while (left && begin < end && drop(text[begin])) ++begin;
  while (right && end > begin && drop(text[end - 1])) --end;
  return encode(std::u32string_view(text).substr(begin, end - begin));
}

std::string ascii_case(std::string s, bool upper) {
  for (char& c : s) c = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(c))
                                                : std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Python's float repr: the shortest round-trip digits, fixed for exponents in [-4, 16).
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  std::size_t e = sci.find('e');
  int exponent = std::stoi(sci.substr(e + 1));
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  if (exponent >= -4 && exponent < 16) {
    std::string out;
    if (exponent < 0) {
      out = "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out = digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
    return sign + out;
  }
  std::string mantissa = digits.size() == 1 ? digits : digits.substr(0, 1) + "." + digits.substr(1);
  char exp_buf[16];
  std::snprintf(exp_buf, sizeof(exp_buf), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return sign + mantissa + exp_buf;
}

std::string string_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (uint32_t c : decode(s)) {
    if (c == static_cast<uint32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F || (c >= 0xDC80 && c <= 0xDCFF)) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c >= 0xDC80 ? c - 0xDC00 : c);
      out += buf;
    } else {
      append_utf8(out, c);
    }
  }
  out += quote;
  return out;
}

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::None: return "NoneType";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::String: return "str";
    case Value::Kind::List: return v.tuple ? "tuple" : "list";
    case Value::Kind::Dict: return v.dict->is_namespace ? "Namespace" : "dict";
    case Value::Kind::Function: return "function";
  }
  return "?";
}

[[noreturn]] void fail(const std::string& message) { throw RenderError{message}; }

// Using an Undefined for anything but printing, testing or iterating is an error, as in Jinja2.
void require_defined(const Value& v) {
  if (v.is_undefined()) fail(v.text.empty() ? "value is undefined" : v.text);
}

std::string repr(const Value& v);

}  // namespace

// ---------------------------------------------------------------------------------------------
// Values

Value Value::undefined(std::string why) {
  Value v;
  v.text = std::move(why);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::from(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.boolean = b;
  return v;
}
Value Value::from(int64_t i) {
  Value v;
  v.kind = Kind::Int;
  v.integer = i;
  return v;
}
Value Value::from(double d) {
  Value v;
  v.kind = Kind::Float;
  v.number = d;
  return v;
}
Value Value::from(std::string s) {
  Value v;
  v.kind = Kind::String;
  v.text = std::move(s);
  return v;
}
Value Value::from(List items, bool tuple) {
  Value v;
  v.kind = Kind::List;
  v.list = std::make_shared<List>(std::move(items));
  v.tuple = tuple;
  return v;
}
Value Value::new_dict() {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<Dict>();
  return v;
}
Value Value::new_namespace() {
  Value v = new_dict();
  v.dict->is_namespace = true;
  return v;
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::set(const std::string& key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(key, std::move(value));
}

namespace {

Value make_function(std::string name, std::function<Value(const Arguments&)> call) {
  Value v;
  v.kind = Value::Kind::Function;
  v.function = std::make_shared<Function>(Function{std::move(name), std::move(call)});
  return v;
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return false;
    case Value::Kind::Bool: return v.boolean;
    case Value::Kind::Int: return v.integer != 0;
    case Value::Kind::Float: return v.number != 0.0;
    case Value::Kind::String: return !v.text.empty();
    case Value::Kind::List: return !v.list->empty();
    case Value::Kind::Dict: return v.dict->is_namespace || !v.dict->items.empty();
    case Value::Kind::Function: return true;
  }
  return false;
}

double as_double(const Value& v) {
  return v.kind == Value::Kind::Float ? v.number
         : v.kind == Value::Kind::Int ? static_cast<double>(v.integer)
                                      : (v.boolean ? 1.0 : 0.0);
}
int64_t as_int(const Value& v) { return v.kind == Value::Kind::Int ? v.integer : v.boolean; }
bool is_integral(const Value& v) {
  return v.kind == Value::Kind::Int || v.kind == Value::Kind::Bool;
}

std::string repr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::String: return string_repr(v.text);
    case Value::Kind::List: {
      std::string out = v.tuple ? "(" : "[";
      for (std::size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += ", ";
        out += repr((*v.list)[i]);
      }
      if (v.tuple && v.list->size() == 1) out += ",";
      return out + (v.tuple ? ")" : "]");
    }
    case Value::Kind::Dict: {
      if (v.dict->is_namespace) return "<Namespace>";
      std::string out = "{";
      bool first = true;
      for (const auto& [k, item] : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += string_repr(k) + ": " + repr(item);
      }
      return out + "}";
    }
    default: return to_str(v);
  }
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (is_integral(a) && is_integral(b)) return as_int(a) == as_int(b);
    return as_double(a) == as_double(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return true;
    case Value::Kind::String: return a.text == b.text;
    case Value::Kind::List:
      if (a.list->size() != b.list->size() || a.tuple != b.tuple) return false;
      for (std::size_t i = 0; i < a.list->size(); ++i) {
        if (!equal((*a.list)[i], (*b.list)[i])) return false;
      }
      return true;
    case Value::Kind::Dict:
      if (a.dict->is_namespace || b.dict->is_namespace) return a.dict == b.dict;
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, item] : a.dict->items) {
        const Value* other = b.dict->find(k);
        if (!other || !equal(item, *other)) return false;
      }
      return true;
    case Value::Kind::Function: return a.function == b.function;
    default: return false;
  }
}

// Python's ordering: numbers with numbers, strings with strings (code point order, which is
// UTF-8 byte order), lists lexicographically; anything else is a TypeError.
int compare(const Value& a, const Value& b, const char* op) {
  if (a.is_number() && b.is_number()) {
    if (is_integral(a) && is_integral(b)) {
      return as_int(a) < as_int(b) ? -1 : as_int(a) > as_int(b) ? 1 : 0;
    }
    double x = as_double(a), y = as_double(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
  if (a.is_list() && b.is_list()) {
    std::size_t n = std::min(a.list->size(), b.list->size());
    for (std::size_t i = 0; i < n; ++i) {
      if (!equal((*a.list)[i], (*b.list)[i])) return compare((*a.list)[i], (*b.list)[i], op);
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  require_defined(a);
  require_defined(b);
  fail(str("'", op, "' not supported between instances of '", type_name(a), "' and '",
           type_name(b), "'"));
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

void json_value(std::string& out, const Value& v, int indent, bool sort_keys, int depth) {
  auto newline = [&](int level) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<std::size_t>(indent * level), ' ');
  };
  const char* item_separator = indent < 0 ? ", " : ",";
  switch (v.kind) {
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.boolean ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.integer); return;
    case Value::Kind::Float:
      out += std::isnan(v.number)   ? "NaN"
             : std::isinf(v.number) ? (v.number < 0 ? "-Infinity" : "Infinity")
                                    : float_repr(v.number);
      return;
    case Value::Kind::String: json_string(out, v.text); return;
    case Value::Kind::List:
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += item_separator;
        newline(depth + 1);
        json_value(out, (*v.list)[i], indent, sort_keys, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    case Value::Kind::Dict: {
      if (v.dict->is_namespace) break;
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : v.dict->items) items.push_back(&item);
      if (sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      }
      out += '{';
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_separator;
        newline(depth + 1);
        json_string(out, items[i]->first);
        out += ": ";
        json_value(out, items[i]->second, indent, sort_keys, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default: break;
  }
  fail(str("Object of type ", type_name(v), " is not JSON serializable"));
}

}  // namespace

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return "";
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return v.boolean ? "True" : "False";
    case Value::Kind::Int: return std::to_string(v.integer);
    case Value::Kind::Float: return float_repr(v.number);
    case Value::Kind::String: return v.text;
    case Value::Kind::Function: return "<function " + v.function->name + ">";
    default: return repr(v);
  }
}

std::string to_json(const Value& value, int indent, bool sort_keys) {
  std::string out;
  json_value(out, value, indent, sort_keys, 0);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Lexer: Jinja2's token stream, with its whitespace control applied to the data between tags.
namespace {

enum class Tok { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, End };

struct Token {
  Tok kind;
  std::string text;
  int line;
};

struct SyntaxError {
  std::string message;
  int line;
};

// Length of the run of Python whitespace starting at `pos` (Jinja2's \s*).
std::size_t space_run(std::string_view s, std::size_t pos) {
  std::size_t end = pos;
  while (end < s.size()) {
    std::u32string one = decode(s.substr(end, std::min<std::size_t>(4, s.size() - end)));
    if (one.empty() || !is_space(one[0])) break;
    std::string back = encode(one.substr(0, 1));
    end += back.size();
  }
  return end - pos;
}

bool all_space(std::string_view s) {
  if (s.empty()) return false;
  for (uint32_t c : decode(s)) {
    if (!is_space(c)) return false;
  }
  return true;
}

std::string unescape_string(std::string_view body, int line) {
  std::string out;
  for (std::size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c != '\\' || i + 1 == body.size()) {
      out += c;
      continue;
    }
    char e = body[++i];
    auto hex = [&](int digits) {
      uint32_t cp = 0;
      for (int k = 1; k <= digits; ++k) {
        char h = i + k < body.size() ? body[i + k] : 'g';
        int d = std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
                : (h >= 'a' && h <= 'f')                     ? h - 'a' + 10
                : (h >= 'A' && h <= 'F')                     ? h - 'A' + 10
                                                             : -1;
        if (d < 0) throw SyntaxError{"truncated \\x/\\u escape in a string literal", line};
        cp = cp * 16 + static_cast<uint32_t>(d);
      }
      i += static_cast<std::size_t>(digits);
      append_utf8(out, cp);
    };
    switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '\n': break;
      case 'x': hex(2); break;
      case 'u': hex(4); break;
      case 'U': hex(8); break;
      default:
        if (e >= '0' && e <= '7') {
          uint32_t cp = static_cast<uint32_t>(e - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7';
               ++k) {
            cp = cp * 8 + static_cast<uint32_t>(body[++i] - '0');
          }
          append_utf8(out, cp);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view raw) {
    // Jinja2 normalises \r\n and \r to \n and drops one trailing newline (keep_trailing_newline
    // is off in transformers).
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        source_ += '\n';
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        source_ += raw[i];
      }
    }
    if (!source_.empty() && source_.back() == '\n') source_.pop_back();
  }

  std::vector<Token> run() {
    std::size_t pos = 0;
    while (pos < source_.size()) {
      std::size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        push(Tok::Data, source_.substr(pos), line_);
        break;
      }
      std::string text = source_.substr(pos, tag - pos);
      char kind = source_[tag + 1];
      char sign = tag + 2 < source_.size() ? source_[tag + 2] : '\0';
      if (sign != '-' && sign != '+') sign = '\0';
      int text_line = line_;
      line_ += static_cast<int>(std::count(text.begin(), text.end(), '\n'));
      if (sign == '-') {
        text = strip(text, nullptr, false, true);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: a block or comment tag preceded on its line by whitespace only.
        std::size_t line_start = text.rfind('\n');
        line_start = line_start == std::string::npos ? 0 : line_start + 1;
        if ((line_start > 0 || line_starting_) && all_space(text.substr(line_start))) {
          text.resize(line_start);
        }
      }
      if (!text.empty()) push(Tok::Data, text, text_line);
      pos = tag + 2 + (sign ? 1 : 0);
      line_starting_ = false;
      if (kind == '#') {
        pos = skip_comment(pos);
      } else {
        push(kind == '{' ? Tok::VarBegin : Tok::BlockBegin, "", line_);
        pos = lex_tag(pos, kind == '{');
      }
    }
    push(Tok::End, "", line_);
    return std::move(tokens_);
  }

 private:
  std::size_t find_tag(std::size_t pos) const {
    while (true) {
      std::size_t brace = source_.find('{', pos);
      if (brace == std::string::npos || brace + 1 >= source_.size()) return std::string::npos;
      char next = source_[brace + 1];
      if (next == '{' || next == '%' || next == '#') return brace;
      pos = brace + 1;
    }
  }

  void push(Tok kind, std::string text, int line) {
    tokens_.push_back(Token{kind, std::move(text), line});
  }

  // Matches an end marker at `pos` ("+X}", "-X}" + whitespace, or "X}" + trim_blocks newline)
  // and returns its length, or 0.
  std::size_t end_marker(std::size_t pos, char close, bool trim_newline) const {
    auto at = [&](std::size_t p, char c) { return p < source_.size() && source_[p] == c; };
    if (close != '}' && at(pos, '+') && at(pos + 1, close) && at(pos + 2, '}')) return 3;
    if (at(pos, '-') && at(pos + 1, close) && at(pos + 2, '}')) {
      return 3 + space_run(source_, pos + 3);
    }
    if (at(pos, close) && at(pos + 1, '}')) return 2 + (trim_newline && at(pos + 2, '\n') ? 1 : 0);
    return 0;
  }

  void consume_end(std::size_t pos, std::size_t length) {
    std::string_view matched = std::string_view(source_).substr(pos, length);
    line_ += static_cast<int>(std::count(matched.begin(), matched.end(), '\n'));
    line_starting_ = !matched.empty() && matched.back() == '\n';
  }

  std::size_t skip_comment(std::size_t pos) {
    int start_line = line_;
    for (std::size_t p = pos; p < source_.size(); ++p) {
      std::size_t length = end_marker(p, '#', true);
      if (length > 0) {
        std::string_view body = std::string_view(source_).substr(pos, p - pos);
        line_ += static_cast<int>(std::count(body.begin(), body.end(), '\n'));
        consume_end(p, length);
        return p + length;
      }
    }
    throw SyntaxError{"Missing end of comment tag", start_line};
  }

  std::size_t lex_tag(std::size_t pos, bool variable) {
    std::vector<char> balance;
    while (true) {
      if (pos >= source_.size()) {
        throw SyntaxError{str("unexpected end of template, expected '", variable ? "}}" : "%}",
                              "'"),
                          line_};
      }
      if (balance.empty()) {
        std::size_t length = end_marker(pos, variable ? '}' : '%', !variable);
        if (length > 0) {
          push(variable ? Tok::VarEnd : Tok::BlockEnd, "", line_);
          consume_end(pos, length);
          return pos + length;
        }
      }
      char c = source_[pos];
      std::size_t spaces = space_run(source_, pos);
      if (spaces > 0) {
        consume_end(pos, spaces);
        pos += spaces;
        continue;
      }
      if (std::isdigit(static_cast<unsigned char>(c))) {
        pos = lex_number(pos);
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        std::size_t end = pos;
        while (end < source_.size() && (std::isalnum(static_cast<unsigned char>(source_[end])) ||
                                        source_[end] == '_')) {
          ++end;
        }
        push(Tok::Name, source_.substr(pos, end - pos), line_);
        pos = end;
      } else if (c == '\'' || c == '"') {
        std::size_t end = pos + 1;
        while (end < source_.size() && source_[end] != c) end += source_[end] == '\\' ? 2 : 1;
        if (end >= source_.size()) throw SyntaxError{"unterminated string literal", line_};
        push(Tok::String, unescape_string(std::string_view(source_).substr(pos + 1, end - pos - 1), line_),
             line_);
        std::string_view body = std::string_view(source_).substr(pos, end + 1 - pos);
        line_ += static_cast<int>(std::count(body.begin(), body.end(), '\n'));
        pos = end + 1;
      } else {
        static const char* const kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
        std::string op(1, c);
        for (const char* two : kTwo) {
          if (source_.compare(pos, 2, two) == 0) op = two;
        }
        if (op.size() == 1 && std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
          throw SyntaxError{str("unexpected char '", c, "'"), line_};
        }
        if (op == "(" || op == "[" || op == "{") {
          balance.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
        } else if (op == ")" || op == "]" || op == "}") {
          if (balance.empty()) throw SyntaxError{"unexpected '" + op + "'", line_};
          if (balance.back() != c) {
            throw SyntaxError{str("unexpected '", op, "', expected '", balance.back(), "'"), line_};
          }
          balance.pop_back();
        }
        push(Tok::Op, op, line_);
        pos += op.size();
      }
    }
  }

  std::size_t lex_number(std::size_t pos) {
    std::size_t end = pos;
    auto digits = [&] {
      while (end < source_.size() &&
             (std::isdigit(static_cast<unsigned char>(source_[end])) || source_[end] == '_')) {
        ++end;
      }
    };
    digits();
    bool is_float = false;
    // A float needs digits after the dot, and not after a preceding dot (`a.0.1` is two lookups).
    bool after_dot = pos > 0 && source_[pos - 1] == '.';
    if (!after_dot && end + 1 < source_.size() && source_[end] == '.' &&
        std::isdigit(static_cast<unsigned char>(source_[end + 1]))) {
      ++end;
      digits();
      is_float = true;
    }
    if (!after_dot && end < source_.size() && (source_[end] == 'e' || source_[end] == 'E')) {
      std::size_t e = end + 1;
      if (e < source_.size() && (source_[e] == '+' || source_[e] == '-')) ++e;
      if (e < source_.size() && std::isdigit(static_cast<unsigned char>(source_[e]))) {
        end = e;
        digits();
        is_float = true;
      }
    }
    std::string text = source_.substr(pos, end - pos);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    push(is_float ? Tok::Float : Tok::Int, text, line_);
    return end;
  }

  std::string source_;
  std::vector<Token> tokens_;
  int line_ = 1;
  bool line_starting_ = true;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Syntax tree: one node type; `kind` says which fields are used.

struct Template::Node {
  enum class Kind {
    // statements
    Body, Text, Print, If, For, Set, SetBlock, Macro, Break, Continue,
    // expressions
    Const, Name, ListLit, TupleLit, DictLit, Getattr, Getitem, Slice, Call, Filter, Test,
    Neg, Pos, Not, And, Or, Binary, Compare, CondExpr
  };
  Kind kind;
  int line = 0;
  std::string name;                           // names, operators, filter/test names, text
  Value constant;                             // Const
  std::vector<std::unique_ptr<Node>> children;
  std::vector<std::string> names;             // For/Set targets, Compare operators, macro params
  std::vector<std::string> keywords;          // keyword argument names (children after positional)
  std::size_t positional = 0;                 // Call/Filter/Test: number of positional arguments
  bool negated = false;                       // Test: `is not`
  bool has_else = false;                      // For: else body present; If: else present
};

namespace {

using Node = Template::Node;

// The filters and tests the renderer implements; Jinja2 rejects unknown names when it compiles.
const std::set<std::string> kFilters = {
    "abs", "capitalize", "count", "d", "default", "e", "escape", "first", "float", "indent",
    "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject",
    "rejectattr", "replace", "reverse", "safe", "select", "selectattr", "string", "sum", "title",
    "tojson", "trim", "unique", "upper", "wordcount"};
const std::set<std::string> kTests = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even", "false", "float",
    "ge", "greaterthan", "gt", "in", "integer", "iterable", "le", "lessthan", "lower", "lt",
    "mapping", "ne", "none", "number", "odd", "sameas", "sequence", "string", "true",
    "undefined", "upper"};
using NodePtr = std::unique_ptr<Node>;
using Kind = Node::Kind;

NodePtr make_node(Kind kind, int line) {
  auto n = std::make_unique<Node>();
  n->kind = kind;
  n->line = line;
  return n;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  NodePtr parse_template() {
    std::string end;
    NodePtr body = parse_body({}, &end);
    return body;
  }

 private:
  const Token& peek(std::size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  Token next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
  bool at_op(const char* op) const { return peek().kind == Tok::Op && peek().text == op; }
  bool at_name(const char* name) const { return peek().kind == Tok::Name && peek().text == name; }
  bool skip_op(const char* op) {
    if (!at_op(op)) return false;
    ++pos_;
    return true;
  }
  bool skip_name(const char* name) {
    if (!at_name(name)) return false;
    ++pos_;
    return true;
  }
  [[noreturn]] void error(const std::string& message) const {
    throw SyntaxError{message, peek().line};
  }
  std::string describe(const Token& t) const {
    switch (t.kind) {
      case Tok::End: return "end of template";
      case Tok::BlockEnd: return "end of statement block";
      case Tok::VarEnd: return "end of print statement";
      case Tok::Data: return "template data";
      default: return "'" + t.text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) error(str("expected '", op, "', got ", describe(peek())));
  }
  std::string expect_name() {
    if (peek().kind != Tok::Name) error(str("expected a name, got ", describe(peek())));
    return next().text;
  }
  void expect_block_end() {
    if (peek().kind != Tok::BlockEnd) {
      error(str("expected end of statement block, got ", describe(peek())));
    }
    ++pos_;
  }

  // Statements until one of `ends` (a block tag name); that name goes to *found.
  NodePtr parse_body(const std::vector<std::string>& ends, std::string* found) {
    NodePtr body = make_node(Kind::Body, peek().line);
    while (true) {
      const Token& t = peek();
      if (t.kind == Tok::End) {
        if (!ends.empty()) {
          std::string list;
          for (const auto& e : ends) list += (list.empty() ? "'" : " or '") + e + "'";
          error("unexpected end of template; Jinja was looking for " + list);
        }
        return body;
      }
      if (t.kind == Tok::Data) {
        NodePtr text = make_node(Kind::Text, t.line);
        text->name = t.text;
        body->children.push_back(std::move(text));
        ++pos_;
      } else if (t.kind == Tok::VarBegin) {
        ++pos_;
        NodePtr print = make_node(Kind::Print, t.line);
        print->children.push_back(parse_expression());
        if (peek().kind != Tok::VarEnd) {
          error(str("expected end of print statement, got ", describe(peek())));
        }
        ++pos_;
        body->children.push_back(std::move(print));
      } else if (t.kind == Tok::BlockBegin) {
        const Token& tag = peek(1);
        if (tag.kind != Tok::Name) {
          pos_ += 1;
          error("tag name expected");
        }
        if (std::find(ends.begin(), ends.end(), tag.text) != ends.end()) {
          pos_ += 2;
          *found = tag.text;
          return body;
        }
        pos_ += 2;
        body->children.push_back(parse_statement(tag));
      } else {
        error(str("unexpected ", describe(t)));
      }
    }
  }

  NodePtr parse_statement(const Token& tag) {
    const std::string& name = tag.text;
    if (name == "if") return parse_if(tag.line);
    if (name == "for") return parse_for(tag.line);
    if (name == "set") return parse_set(tag.line);
    if (name == "macro") return parse_macro(tag.line);
    if (name == "break" || name == "continue") {
      expect_block_end();
      return make_node(name == "break" ? Kind::Break : Kind::Continue, tag.line);
    }
    if (name == "generation") {
      // transformers' {% generation %} marks assistant text for masks; it renders its body.
      expect_block_end();
      std::string found;
      NodePtr body = parse_body({"endgeneration"}, &found);
      expect_block_end();
      return body;
    }
    static const std::set<std::string> kKnown = {"elif", "else", "endif", "endfor", "endset",
                                                 "endmacro", "endgeneration"};
    if (kKnown.count(name)) {
      throw SyntaxError{str("Encountered unknown tag '", name, "'."), tag.line};
    }
    throw SyntaxError{str("Encountered unknown tag '", name, "'."), tag.line};
  }

  NodePtr parse_if(int line) {
    NodePtr node = make_node(Kind::If, line);
    while (true) {
      node->children.push_back(parse_tuple_or_expression());
      expect_block_end();
      std::string found;
      node->children.push_back(parse_body({"elif", "else", "endif"}, &found));
      if (found == "elif") continue;
      if (found == "else") {
        expect_block_end();
        node->children.push_back(parse_body({"endif"}, &found));
        node->has_else = true;
      }
      expect_block_end();
      return node;
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    bool paren = skip_op("(");
    names.push_back(expect_name());
    while (skip_op(",")) {
      if (at_name("in") || at_op(")") || at_op("=")) break;
      names.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return names;
  }

  NodePtr parse_for(int line) {
    NodePtr node = make_node(Kind::For, line);
    node->names = parse_targets();
    if (!skip_name("in")) error(str("expected 'in', got ", describe(peek())));
    node->children.push_back(parse_tuple_or_expression(/*with_condexpr=*/false));
    NodePtr condition;
    if (skip_name("if")) condition = parse_tuple_or_expression();
    if (at_name("recursive")) error("recursive loops are not in lmforge's Jinja subset");
    expect_block_end();
    std::string found;
    node->children.push_back(parse_body({"endfor", "else"}, &found));
    if (found == "else") {
      expect_block_end();
      node->children.push_back(parse_body({"endfor"}, &found));
      node->has_else = true;
    } else {
      node->children.push_back(make_node(Kind::Body, line));
    }
    expect_block_end();
    node->children.push_back(condition ? std::move(condition) : NodePtr());
    return node;  // children: iterable, body, else body, condition (may be null)
  }

  NodePtr parse_set(int line) {
    std::string first = expect_name();
    if (skip_op(".")) {
      NodePtr node = make_node(Kind::Set, line);
      node->names = {first};
      node->name = expect_name();  // namespace attribute
      expect_op("=");
      node->children.push_back(parse_tuple_or_expression());
      expect_block_end();
      return node;
    }
    std::vector<std::string> names = {first};
    while (skip_op(",")) names.push_back(expect_name());
    if (skip_op("=")) {
      NodePtr node = make_node(Kind::Set, line);
      node->names = names;
      node->children.push_back(parse_tuple_or_expression());
      expect_block_end();
      return node;
    }
    if (names.size() != 1) error("expected '='");
    if (at_op("|")) error("filtered block sets are not in lmforge's Jinja subset");
    expect_block_end();
    NodePtr node = make_node(Kind::SetBlock, line);
    node->names = names;
    std::string found;
    node->children.push_back(parse_body({"endset"}, &found));
    expect_block_end();
    return node;
  }

  NodePtr parse_macro(int line) {
    NodePtr node = make_node(Kind::Macro, line);
    node->name = expect_name();
    expect_op("(");
    std::vector<NodePtr> defaults;
    while (!at_op(")")) {
      if (!node->names.empty()) expect_op(",");
      if (at_op(")")) break;
      node->names.push_back(expect_name());
      if (skip_op("=")) {
        defaults.push_back(parse_expression());
      } else {
        if (!defaults.empty() && defaults.back()) error("non-default argument follows default argument");
        defaults.push_back(nullptr);
      }
    }
    expect_op(")");
    expect_block_end();
    std::string found;
    node->children.push_back(parse_body({"endmacro"}, &found));
    if (peek().kind == Tok::Name && peek().text == node->name) ++pos_;
    expect_block_end();
    for (auto& d : defaults) node->children.push_back(std::move(d));
    return node;  // children: body, then one default (or null) per parameter
  }

  // --- expressions, in Jinja2's precedence order -------------------------------------------

  NodePtr parse_tuple_or_expression(bool with_condexpr = true) {
    int line = peek().line;
    NodePtr first = with_condexpr ? parse_expression() : parse_or();
    if (!at_op(",")) return first;
    NodePtr tuple = make_node(Kind::TupleLit, line);
    tuple->children.push_back(std::move(first));
    while (skip_op(",")) {
      if (peek().kind == Tok::BlockEnd || peek().kind == Tok::VarEnd) break;
      tuple->children.push_back(with_condexpr ? parse_expression() : parse_or());
    }
    return tuple;
  }

  NodePtr parse_expression() {
    NodePtr expr = parse_or();
    while (at_name("if")) {
      int line = next().line;
      NodePtr node = make_node(Kind::CondExpr, line);
      NodePtr condition = parse_or();
      NodePtr otherwise = skip_name("else") ? parse_expression() : NodePtr();
      node->children.push_back(std::move(condition));
      node->children.push_back(std::move(expr));
      node->children.push_back(std::move(otherwise));
      expr = std::move(node);
    }
    return expr;
  }

  NodePtr binary(Kind kind, std::string op, NodePtr left, NodePtr right, int line) {
    NodePtr node = make_node(kind, line);
    node->name = std::move(op);
    node->children.push_back(std::move(left));
    node->children.push_back(std::move(right));
    return node;
  }

  NodePtr parse_or() {
    NodePtr left = parse_and();
    while (at_name("or")) {
      int line = next().line;
      left = binary(Kind::Or, "or", std::move(left), parse_and(), line);
    }
    return left;
  }

  NodePtr parse_and() {
    NodePtr left = parse_not();
    while (at_name("and")) {
      int line = next().line;
      left = binary(Kind::And, "and", std::move(left), parse_not(), line);
    }
    return left;
  }

  NodePtr parse_not() {
    if (at_name("not")) {
      int line = next().line;
      NodePtr node = make_node(Kind::Not, line);
      node->children.push_back(parse_not());
      return node;
    }
    return parse_compare();
  }

  NodePtr parse_compare() {
    int line = peek().line;
    NodePtr first = parse_math1();
    NodePtr node;
    while (true) {
      std::string op;
      if (peek().kind == Tok::Op &&
          (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
           peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (at_name("in")) {
        ++pos_;
        op = "in";
      } else if (at_name("not") && peek(1).kind == Tok::Name && peek(1).text == "in") {
        pos_ += 2;
        op = "not in";
      } else {
        break;
      }
      if (!node) {
        node = make_node(Kind::Compare, line);
        node->children.push_back(std::move(first));
      }
      node->names.push_back(op);
      node->children.push_back(parse_math1());
    }
    return node ? std::move(node) : std::move(first);
  }

  NodePtr parse_math1() {
    NodePtr left = parse_concat();
    while (at_op("+") || at_op("-")) {
      Token op = next();
      left = binary(Kind::Binary, op.text, std::move(left), parse_concat(), op.line);
    }
    return left;
  }

  NodePtr parse_concat() {
    NodePtr left = parse_math2();
    while (at_op("~")) {
      Token op = next();
      left = binary(Kind::Binary, "~", std::move(left), parse_math2(), op.line);
    }
    return left;
  }

  NodePtr parse_math2() {
    NodePtr left = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      Token op = next();
      left = binary(Kind::Binary, op.text, std::move(left), parse_pow(), op.line);
    }
    return left;
  }

  NodePtr parse_pow() {
    NodePtr left = parse_unary(true);
    while (at_op("**")) {
      Token op = next();
      left = binary(Kind::Binary, "**", std::move(left), parse_unary(true), op.line);
    }
    return left;
  }

  NodePtr parse_unary(bool with_filter) {
    NodePtr node;
    if (at_op("-") || at_op("+")) {
      Token op = next();
      node = make_node(op.text == "-" ? Kind::Neg : Kind::Pos, op.line);
      node->children.push_back(parse_unary(false));
    } else {
      node = parse_postfix(parse_primary());
    }
    if (with_filter) node = parse_filters(std::move(node));
    return node;
  }

  NodePtr parse_primary() {
    const Token& t = peek();
    int line = t.line;
    if (t.kind == Tok::Name) {
      std::string name = next().text;
      if (name == "true" || name == "True") return constant(Value::from(true), line);
      if (name == "false" || name == "False") return constant(Value::from(false), line);
      if (name == "none" || name == "None") return constant(Value::none(), line);
      NodePtr node = make_node(Kind::Name, line);
      node->name = name;
      return node;
    }
    if (t.kind == Tok::String) {
      std::string text;
      while (peek().kind == Tok::String) text += next().text;  // adjacent literals concatenate
      return constant(Value::from(text), line);
    }
    if (t.kind == Tok::Int) {
      std::string text = next().text;
      int64_t v = 0;
      auto res = std::from_chars(text.data(), text.data() + text.size(), v);
      if (res.ec != std::errc()) throw SyntaxError{"integer literal out of range", line};
      return constant(Value::from(v), line);
    }
    if (t.kind == Tok::Float) {
      std::string text = next().text;
      return constant(Value::from(std::strtod(text.c_str(), nullptr)), line);
    }
    if (skip_op("(")) {
      if (skip_op(")")) return make_node(Kind::TupleLit, line);
      NodePtr first = parse_expression();
      if (!at_op(",")) {
        expect_op(")");
        return first;
      }
      NodePtr tuple = make_node(Kind::TupleLit, line);
      tuple->children.push_back(std::move(first));
      while (skip_op(",")) {
        if (at_op(")")) break;
        tuple->children.push_back(parse_expression());
      }
      expect_op(")");
      return tuple;
    }
    if (skip_op("[")) {
      NodePtr list = make_node(Kind::ListLit, line);
      while (!at_op("]")) {
        if (!list->children.empty()) expect_op(",");
        if (at_op("]")) break;
        list->children.push_back(parse_expression());
      }
      expect_op("]");
      return list;
    }
    if (skip_op("{")) {
      NodePtr dict = make_node(Kind::DictLit, line);
      while (!at_op("}")) {
        if (!dict->children.empty()) expect_op(",");
        if (at_op("}")) break;
        dict->children.push_back(parse_expression());
        expect_op(":");
        dict->children.push_back(parse_expression());
      }
      expect_op("}");
      return dict;
    }
    error(str("unexpected ", describe(t)));
  }

  NodePtr constant(Value v, int line) {
    NodePtr node = make_node(Kind::Const, line);
    node->constant = std::move(v);
    return node;
  }

  NodePtr parse_postfix(NodePtr node) {
    while (true) {
      int line = peek().line;
      if (skip_op(".")) {
        NodePtr attr = make_node(Kind::Getattr, line);
        if (peek().kind == Tok::Int) {
          // `x.0` is Jinja2's x[0]
          attr->kind = Kind::Getitem;
          attr->children.push_back(std::move(node));
          attr->children.push_back(parse_primary());
        } else {
          attr->name = expect_name();
          attr->children.push_back(std::move(node));
        }
        node = std::move(attr);
      } else if (skip_op("[")) {
        node = parse_subscript(std::move(node), line);
      } else if (at_op("(")) {
        node = parse_call(std::move(node), Kind::Call, "", line);
      } else {
        return node;
      }
    }
  }

  NodePtr parse_subscript(NodePtr object, int line) {
    NodePtr parts[3];
    bool slice = false;
    int part = 0;
    while (!at_op("]")) {
      if (skip_op(":")) {
        slice = true;
        if (++part > 2) error("too many ':' in a slice");
        continue;
      }
      if (parts[part]) error(str("expected ']', got ", describe(peek())));
      parts[part] = parse_expression();
    }
    expect_op("]");
    if (!slice && !parts[0]) error("empty subscript");
    NodePtr node = make_node(slice ? Kind::Slice : Kind::Getitem, line);
    node->children.push_back(std::move(object));
    if (!slice) {
      node->children.push_back(std::move(parts[0]));
    } else {
      for (auto& p : parts) node->children.push_back(std::move(p));
    }
    return node;
  }

  // Call arguments into `node` after its first child: positional, then keyword.
  NodePtr parse_call(NodePtr callee, Kind kind, std::string name, int line) {
    NodePtr node = make_node(kind, line);
    node->name = std::move(name);
    if (callee) node->children.push_back(std::move(callee));
    if (!skip_op("(")) return node;
    std::vector<NodePtr> keyword_values;
    bool first = true;
    while (!at_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (at_op(")")) break;
      if (peek().kind == Tok::Name && peek(1).kind == Tok::Op && peek(1).text == "=") {
        node->keywords.push_back(next().text);
        ++pos_;
        keyword_values.push_back(parse_expression());
      } else {
        if (!keyword_values.empty()) error("positional argument follows keyword argument");
        if (at_op("*") || at_op("**")) error("*args/**kwargs calls are not in lmforge's Jinja subset");
        node->children.push_back(parse_expression());
        ++node->positional;
      }
    }
    expect_op(")");
    for (auto& v : keyword_values) node->children.push_back(std::move(v));
    return node;
  }

  NodePtr parse_filters(NodePtr node) {
    while (true) {
      if (at_op("|")) {
        int line = next().line;
        std::string name = expect_name();
        if (!kFilters.count(name)) throw SyntaxError{str("No filter named '", name, "'."), line};
        node = parse_call(std::move(node), Kind::Filter, name, line);
      } else if (at_name("is")) {
        int line = next().line;
        bool negated = skip_name("not");
        std::string name = expect_name();
        if (!kTests.count(name)) throw SyntaxError{str("No test named '", name, "'."), line};
        NodePtr test;
        if (at_op("(")) {
          test = parse_call(std::move(node), Kind::Test, name, line);
        } else {
          test = make_node(Kind::Test, line);
          test->name = name;
          test->children.push_back(std::move(node));
          const Token& t = peek();
          bool argument = (t.kind == Tok::Name || t.kind == Tok::String || t.kind == Tok::Int ||
                           t.kind == Tok::Float || at_op("[") || at_op("{")) &&
                          !at_name("else") && !at_name("or") && !at_name("and") &&
                          !at_name("if") && !at_name("is") && !at_name("in") && !at_name("not");
          if (argument) {
            test->children.push_back(parse_postfix(parse_primary()));
            test->positional = 1;
          }
        }
        test->negated = negated;
        node = std::move(test);
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Builtin filters, tests and methods: Python behaviour of the functions Jinja2 calls.
namespace {

// The argument at `index` or keyword `name`, else `fallback`.
Value arg(const Arguments& args, std::size_t index, const char* name, Value fallback = {}) {
  if (index < args.positional.size()) return args.positional[index];
  for (const auto& [k, v] : args.keyword) {
    if (k == name) return v;
  }
  return fallback;
}

const std::string& need_string(const Value& v, const char* what) {
  require_defined(v);
  if (!v.is_string()) fail(str(what, " expects a string, not '", type_name(v), "'"));
  return v.text;
}

int64_t need_int(const Value& v, const char* what) {
  require_defined(v);
  if (!is_integral(v)) fail(str(what, " expects an integer, not '", type_name(v), "'"));
  return as_int(v);
}

// Python's iteration: strings by code point, dicts by key; Undefined iterates as empty.
List iterate(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::List: return *v.list;
    case Value::Kind::String: {
      List out;
      for (uint32_t c : decode(v.text)) out.push_back(Value::from(encode(std::u32string(1, c))));
      return out;
    }
    case Value::Kind::Dict: {
      if (v.dict->is_namespace) break;
      List out;
      for (const auto& item : v.dict->items) out.push_back(Value::from(item.first));
      return out;
    }
    default: break;
  }
  fail(str("'", type_name(v), "' object is not iterable"));
}

int64_t length(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return 0;
    case Value::Kind::String: return static_cast<int64_t>(decode(v.text).size());
    case Value::Kind::List: return static_cast<int64_t>(v.list->size());
    case Value::Kind::Dict:
      if (!v.dict->is_namespace) return static_cast<int64_t>(v.dict->items.size());
      break;
    default: break;
  }
  fail(str("object of type '", type_name(v), "' has no len()"));
}

// Python's slice.indices(): clamps start/stop for the sign of step.
std::vector<int64_t> slice_indices(int64_t size, const Value& start, const Value& stop,
                                   const Value& step) {
  int64_t st = step.is_none() ? 1 : need_int(step, "slice step");
  if (st == 0) fail("slice step cannot be zero");
  auto bound = [&](const Value& v, int64_t fallback) {
    if (v.is_none()) return fallback;
    int64_t i = need_int(v, "slice index");
    if (i < 0) i += size;
    if (st > 0) return std::clamp<int64_t>(i, 0, size);
    return std::clamp<int64_t>(i, -1, size - 1);
  };
  int64_t begin = bound(start, st > 0 ? 0 : size - 1);
  int64_t end = bound(stop, st > 0 ? size : -1);
  std::vector<int64_t> out;
  for (int64_t i = begin; st > 0 ? i < end : i > end; i += st) out.push_back(i);
  return out;
}

std::vector<std::string> split(const std::string& s, const Value& sep, int64_t max_split) {
  std::vector<std::string> out;
  if (sep.is_none() || sep.is_undefined()) {
    std::u32string text = decode(s);
    std::size_t i = 0;
    while (true) {
      while (i < text.size() && is_space(text[i])) ++i;
      if (i == text.size()) break;
      if (max_split >= 0 && static_cast<int64_t>(out.size()) == max_split) {
        std::size_t end = text.size();
        while (end > i && is_space(text[end - 1])) --end;
        out.push_back(encode(std::u32string_view(text).substr(i, end - i)));
        break;
      }
      std::size_t j = i;
      while (j < text.size() && !is_space(text[j])) ++j;
      out.push_back(encode(std::u32string_view(text).substr(i, j - i)));
      i = j;
    }
    return out;
  }
  const std::string& separator = need_string(sep, "split");
  if (separator.empty()) fail("empty separator");
  std::size_t pos = 0;
  while (max_split < 0 || static_cast<int64_t>(out.size()) < max_split) {
    std::size_t hit = s.find(separator, pos);
    if (hit == std::string::npos) break;
    out.push_back(s.substr(pos, hit - pos));
    pos = hit + separator.size();
  }
  out.push_back(s.substr(pos));
  return out;
}

std::string replace(const std::string& s, const std::string& old, const std::string& with,
                    int64_t count) {
  std::string out;
  std::size_t pos = 0;
  int64_t done = 0;
  if (old.empty()) {
    // Python inserts `with` between every code point (and at both ends).
    std::u32string text = decode(s);
    for (std::size_t i = 0; i <= text.size(); ++i) {
      if (count < 0 || done < count) {
        out += with;
        ++done;
      }
      if (i < text.size()) append_utf8(out, text[i]);
    }
    return out;
  }
  while (count < 0 || done < count) {
    std::size_t hit = s.find(old, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += with;
    pos = hit + old.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

std::string title_case(const std::string& s) {
  std::string out = s;
  bool previous_cased = false;
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    bool letter = std::isalpha(u) != 0;
    if (letter) c = static_cast<char>(previous_cased ? std::tolower(u) : std::toupper(u));
    previous_cased = letter;
  }
  return out;
}

std::string capitalize(const std::string& s) {
  std::string out = ascii_case(s, false);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

bool prefix_match(const std::string& s, const Value& what, bool at_start) {
  auto one = [&](const Value& v) {
    const std::string& p = need_string(v, at_start ? "startswith" : "endswith");
    if (p.size() > s.size()) return false;
    return at_start ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0;
  };
  if (what.is_list() && what.tuple) {
    for (const auto& v : *what.list) {
      if (one(v)) return true;
    }
    return false;
  }
  return one(what);
}

Value string_list(const std::vector<std::string>& parts) {
  List out;
  for (const auto& p : parts) out.push_back(Value::from(p));
  return Value::from(std::move(out));
}

Value unsafe_method(const std::string& type, const std::string& name) {
  return make_function(name, [type, name](const Arguments&) -> Value {
    fail(str("access to attribute '", name, "' of '", type,
             "' object is unsafe (templates cannot change values)"));
  });
}

// A bound method of a string, or Undefined when str has no such attribute.
Value string_method(const std::string& s, const std::string& name) {
  auto bind = [&](auto fn) { return make_function("str." + name, fn); };
  if (name == "startswith" || name == "endswith") {
    bool start = name == "startswith";
    return bind([s, start](const Arguments& a) { return Value::from(prefix_match(s, arg(a, 0, "prefix"), start)); });
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool left = name != "rstrip", right = name != "lstrip";
    return bind([s, left, right](const Arguments& a) {
      Value chars = arg(a, 0, "chars", Value::none());
      if (chars.is_none()) return Value::from(strip(s, nullptr, left, right));
      return Value::from(strip(s, &need_string(chars, "strip"), left, right));
    });
  }
  if (name == "split") {
    return bind([s](const Arguments& a) {
      Value max = arg(a, 1, "maxsplit", Value::from(int64_t{-1}));
      return string_list(split(s, arg(a, 0, "sep", Value::none()), need_int(max, "split")));
    });
  }
  if (name == "rsplit") {
    return bind([s](const Arguments& a) {
      Value sep = arg(a, 0, "sep", Value::none());
      int64_t max = need_int(arg(a, 1, "maxsplit", Value::from(int64_t{-1})), "rsplit");
      std::vector<std::string> all = split(s, sep, -1);
      if (max < 0 || static_cast<int64_t>(all.size()) <= max + 1) return string_list(all);
      if (sep.is_none()) fail("rsplit() without a separator and with maxsplit is not supported");
      std::vector<std::string> out;
      std::string head = all[0];
      std::size_t keep = all.size() - static_cast<std::size_t>(max);
      for (std::size_t i = 1; i < keep; ++i) head += sep.text + all[i];
      out.push_back(head);
      out.insert(out.end(), all.begin() + static_cast<std::ptrdiff_t>(keep), all.end());
      return string_list(out);
    });
  }
  if (name == "replace") {
    return bind([s](const Arguments& a) {
      return Value::from(replace(s, need_string(arg(a, 0, "old"), "replace"),
                                 need_string(arg(a, 1, "new"), "replace"),
                                 need_int(arg(a, 2, "count", Value::from(int64_t{-1})), "replace")));
    });
  }
  if (name == "upper" || name == "lower") {
    bool upper = name == "upper";
    return bind([s, upper](const Arguments&) { return Value::from(ascii_case(s, upper)); });
  }
  if (name == "title") return bind([s](const Arguments&) { return Value::from(title_case(s)); });
  if (name == "capitalize") return bind([s](const Arguments&) { return Value::from(capitalize(s)); });
  if (name == "find" || name == "rfind" || name == "count" || name == "index") {
    return bind([s, name](const Arguments& a) {
      const std::string& sub = need_string(arg(a, 0, "sub"), name.c_str());
      if (name == "count") {
        if (sub.empty()) return Value::from(length(Value::from(s)) + 1);
        int64_t n = 0;
        for (std::size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        return Value::from(n);
      }
      std::size_t hit = name == "rfind" ? s.rfind(sub) : s.find(sub);
      if (hit == std::string::npos) {
        if (name == "index") fail("substring not found");
        return Value::from(int64_t{-1});
      }
      return Value::from(static_cast<int64_t>(decode(std::string_view(s).substr(0, hit)).size()));
    });
  }
  if (name == "join") {
    return bind([s](const Arguments& a) {
      std::string out;
      List items = iterate(arg(a, 0, "iterable"));
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += s;
        out += need_string(items[i], "str.join");
      }
      return Value::from(out);
    });
  }
  if (name == "splitlines") {
    return bind([s](const Arguments& a) {
      bool keep = truthy(arg(a, 0, "keepends", Value::from(false)));
      std::vector<std::string> out;
      std::size_t start = 0;
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\n' && s[i] != '\r') continue;
        std::size_t end = i;
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        out.push_back(s.substr(start, (keep ? i + 1 : end) - start));
        start = i + 1;
      }
      if (start < s.size()) out.push_back(s.substr(start));
      return string_list(out);
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isupper" ||
      name == "islower") {
    return bind([s, name](const Arguments&) {
      if (s.empty()) return Value::from(false);
      bool cased = false;
      for (uint32_t c : decode(s)) {
        bool ok = name == "isdigit"   ? (c >= '0' && c <= '9')
                  : name == "isalpha" ? (c < 128 && std::isalpha(static_cast<int>(c)))
                  : name == "isspace" ? is_space(c)
                  : name == "isupper" ? !(c >= 'a' && c <= 'z')
                                      : !(c >= 'A' && c <= 'Z');
        if (!ok) return Value::from(false);
        cased = cased || (c < 128 && std::isalpha(static_cast<int>(c)));
      }
      return Value::from(name == "isupper" || name == "islower" ? cased : true);
    });
  }
  return Value::undefined(str("'str object' has no attribute '", name, "'"));
}

Value items_of(const Dict& d) {
  List out;
  for (const auto& [k, v] : d.items) out.push_back(Value::from(List{Value::from(k), v}, true));
  return Value::from(std::move(out));
}

Value dict_method(const std::shared_ptr<Dict>& d, const std::string& name) {
  auto bind = [&](auto fn) { return make_function("dict." + name, fn); };
  if (name == "items") return bind([d](const Arguments&) { return items_of(*d); });
  if (name == "keys" || name == "values") {
    bool keys = name == "keys";
    return bind([d, keys](const Arguments&) {
      List out;
      for (const auto& [k, v] : d->items) out.push_back(keys ? Value::from(k) : v);
      return Value::from(std::move(out));
    });
  }
  if (name == "get") {
    return bind([d](const Arguments& a) {
      Value key = arg(a, 0, "key");
      const Value* hit = key.is_string() ? d->find(key.text) : nullptr;
      return hit ? *hit : arg(a, 1, "default", Value::none());
    });
  }
  static const std::set<std::string> kMutating = {"update", "pop", "popitem", "clear", "setdefault"};
  if (kMutating.count(name)) return unsafe_method("dict", name);
  return Value::undefined();
}

Value get_attr(const Value& object, const std::string& name) {
  switch (object.kind) {
    case Value::Kind::Undefined: require_defined(object); break;
    case Value::Kind::String: return string_method(object.text, name);
    case Value::Kind::Dict: {
      if (!object.dict->is_namespace) {
        Value method = dict_method(object.dict, name);
        if (!method.is_undefined()) return method;
      }
      if (const Value* hit = object.dict->find(name)) return *hit;
      return Value::undefined(str("'", object.dict->is_namespace ? "Namespace" : "dict",
                                  " object' has no attribute '", name, "'"));
    }
    case Value::Kind::List: {
      static const std::set<std::string> kMutating = {"append", "pop",  "insert", "extend",
                                                      "remove", "clear", "sort",  "reverse"};
      if (kMutating.count(name)) return unsafe_method("list", name);
      break;
    }
    default: break;
  }
  return Value::undefined(str("'", object.is_none() ? "None" : type_name(object),
                              object.is_none() ? "'" : " object'", " has no attribute '", name,
                              "'"));
}

Value get_item(const Value& object, const Value& key) {
  require_defined(object);
  if (object.is_dict() && !object.dict->is_namespace) {
    if (key.is_string()) {
      if (const Value* hit = object.dict->find(key.text)) return *hit;
      Value method = dict_method(object.dict, key.text);
      if (!method.is_undefined()) return method;
    }
    return Value::undefined(str("'dict object' has no attribute ", repr(key)));
  }
  if ((object.is_list() || object.is_string()) && is_integral(key)) {
    int64_t i = as_int(key);
    if (object.is_list()) {
      int64_t n = static_cast<int64_t>(object.list->size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return (*object.list)[static_cast<std::size_t>(i)];
    } else {
      std::u32string text = decode(object.text);
      int64_t n = static_cast<int64_t>(text.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return Value::from(encode(text.substr(static_cast<std::size_t>(i), 1)));
    }
    return Value::undefined(str(type_name(object), " object has no element ", as_int(key)));
  }
  if (key.is_string()) return get_attr(object, key.text);
  return Value::undefined(str("'", type_name(object), " object' has no element ", repr(key)));
}

Value slice(const Value& object, const Value& start, const Value& stop, const Value& step) {
  require_defined(object);
  if (object.is_list()) {
    List out;
    for (int64_t i : slice_indices(static_cast<int64_t>(object.list->size()), start, stop, step)) {
      out.push_back((*object.list)[static_cast<std::size_t>(i)]);
    }
    return Value::from(std::move(out), object.tuple);
  }
  if (object.is_string()) {
    std::u32string text = decode(object.text);
    std::u32string out;
    for (int64_t i : slice_indices(static_cast<int64_t>(text.size()), start, stop, step)) {
      out.push_back(text[static_cast<std::size_t>(i)]);
    }
    return Value::from(encode(out));
  }
  fail(str("'", type_name(object), "' object is not subscriptable"));
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") return Value::from(to_str(a) + to_str(b));
  require_defined(a);
  require_defined(b);
  bool numbers = a.is_number() && b.is_number();
  bool ints = numbers && is_integral(a) && is_integral(b);
  auto unsupported = [&]() -> Value {
    if (op == "+" && a.is_string()) {
      fail(str("can only concatenate str (not \"", type_name(b), "\") to str"));
    }
    if (op == "+" && a.is_list()) {
      fail(str("can only concatenate list (not \"", type_name(b), "\") to list"));
    }
    fail(str("unsupported operand type(s) for ", op, ": '", type_name(a), "' and '",
             type_name(b), "'"));
  };
  if (op == "+") {
    if (ints) return Value::from(as_int(a) + as_int(b));
    if (numbers) return Value::from(as_double(a) + as_double(b));
    if (a.is_string() && b.is_string()) return Value::from(a.text + b.text);
    if (a.is_list() && b.is_list() && a.tuple == b.tuple) {
      List out = *a.list;
      out.insert(out.end(), b.list->begin(), b.list->end());
      return Value::from(std::move(out), a.tuple);
    }
    return unsupported();
  }
  if (op == "-") {
    if (ints) return Value::from(as_int(a) - as_int(b));
    if (numbers) return Value::from(as_double(a) - as_double(b));
    return unsupported();
  }
  if (op == "*") {
    if (ints) return Value::from(as_int(a) * as_int(b));
    if (numbers) return Value::from(as_double(a) * as_double(b));
    const Value* seq = a.is_string() || a.is_list() ? &a : &b;
    const Value* times = seq == &a ? &b : &a;
    if ((seq->is_string() || seq->is_list()) && is_integral(*times)) {
      int64_t n = std::max<int64_t>(0, as_int(*times));
      if (seq->is_string()) {
        std::string out;
        for (int64_t i = 0; i < n; ++i) out += seq->text;
        return Value::from(out);
      }
      List out;
      for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq->list->begin(), seq->list->end());
      return Value::from(std::move(out), seq->tuple);
    }
    return unsupported();
  }
  if (!numbers) return unsupported();
  if (op == "/") {
    if (as_double(b) == 0.0) fail("division by zero");
    return Value::from(as_double(a) / as_double(b));
  }
  if (op == "//" || op == "%") {
    if (as_double(b) == 0.0) fail(ints ? "integer division or modulo by zero" : "float modulo");
    if (ints) {
      int64_t x = as_int(a), y = as_int(b);
      int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {
        q -= 1;
        r += y;
      }
      return Value::from(op == "//" ? q : r);
    }
    double x = as_double(a), y = as_double(b);
    double q = std::floor(x / y);
    return Value::from(op == "//" ? q : x - q * y);
  }
  if (op == "**") {
    if (ints && as_int(b) >= 0) {
      int64_t result = 1;
      for (int64_t i = 0; i < as_int(b); ++i) result *= as_int(a);
      return Value::from(result);
    }
    return Value::from(std::pow(as_double(a), as_double(b)));
  }
  return unsupported();
}

bool contains(const Value& container, const Value& item) {
  require_defined(container);
  if (container.is_string()) {
    if (!item.is_string()) {
      fail(str("'in <string>' requires string as left operand, not ", type_name(item)));
    }
    return container.text.find(item.text) != std::string::npos;
  }
  if (container.is_list()) {
    for (const auto& v : *container.list) {
      if (equal(v, item)) return true;
    }
    return false;
  }
  if (container.is_dict() && !container.dict->is_namespace) {
    return item.is_string() && container.dict->find(item.text) != nullptr;
  }
  fail(str("argument of type '", type_name(container), "' is not iterable"));
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Renderer

namespace {

enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  explicit Renderer(std::vector<std::map<std::string, Value>> frames) : frames_(std::move(frames)) {}

  int line() const { return line_; }

  Flow exec(const Node& node, std::string& out) {
    line_ = node.line;
    switch (node.kind) {
      case Kind::Body:
        for (const auto& child : node.children) {
          Flow flow = exec(*child, out);
          if (flow != Flow::Normal) return flow;
        }
        return Flow::Normal;
      case Kind::Text: out += node.name; return Flow::Normal;
      case Kind::Print: out += to_str(eval(*node.children[0])); return Flow::Normal;
      case Kind::If: {
        std::size_t branches = node.children.size() / 2;
        for (std::size_t b = 0; b < branches; ++b) {
          if (truthy(eval(*node.children[2 * b]))) return exec(*node.children[2 * b + 1], out);
        }
        if (node.has_else) return exec(*node.children.back(), out);
        return Flow::Normal;
      }
      case Kind::For: return exec_for(node, out);
      case Kind::Set: {
        Value value = eval(*node.children[0]);
        line_ = node.line;
        if (!node.name.empty()) {
          Value target = lookup(node.names[0]);
          if (!target.is_dict() || !target.dict->is_namespace) {
            fail("cannot assign attribute on non-namespace object");
          }
          target.dict->set(node.name, std::move(value));
        } else {
          bind(node.names, value);
        }
        return Flow::Normal;
      }
      case Kind::SetBlock: {
        std::string captured;
        exec(*node.children[0], captured);
        frames_.back()[node.names[0]] = Value::from(captured);
        return Flow::Normal;
      }
      case Kind::Macro: define_macro(node); return Flow::Normal;
      case Kind::Break: return Flow::Break;
      case Kind::Continue: return Flow::Continue;
      default: fail("internal error: expression node used as a statement");
    }
  }

  Value eval(const Node& node) {
    line_ = node.line;
    const auto& c = node.children;
    switch (node.kind) {
      case Kind::Const: return node.constant;
      case Kind::Name: return lookup(node.name);
      case Kind::ListLit:
      case Kind::TupleLit: {
        List items;
        for (const auto& child : c) items.push_back(eval(*child));
        return Value::from(std::move(items), node.kind == Kind::TupleLit);
      }
      case Kind::DictLit: {
        Value dict = Value::new_dict();
        for (std::size_t i = 0; i + 1 < c.size(); i += 2) {
          Value key = eval(*c[i]);
          if (!key.is_string()) fail("dict literal keys must be strings in lmforge's Jinja subset");
          dict.dict->set(key.text, eval(*c[i + 1]));
        }
        return dict;
      }
      case Kind::Getattr: {
        Value object = eval(*c[0]);
        line_ = node.line;
        return get_attr(object, node.name);
      }
      case Kind::Getitem: {
        Value object = eval(*c[0]);
        Value key = eval(*c[1]);
        line_ = node.line;
        return get_item(object, key);
      }
      case Kind::Slice: {
        Value object = eval(*c[0]);
        Value parts[3];
        for (int i = 0; i < 3; ++i) parts[i] = c[1 + i] ? eval(*c[1 + i]) : Value::none();
        line_ = node.line;
        return slice(object, parts[0], parts[1], parts[2]);
      }
      case Kind::Call: {
        Value callee = eval(*c[0]);
        Arguments args = arguments(node, 1);
        line_ = node.line;
        require_defined(callee);
        if (callee.kind != Value::Kind::Function) {
          fail(str("'", type_name(callee), "' object is not callable"));
        }
        return callee.function->call(args);
      }
      case Kind::Filter: {
        Value input = eval(*c[0]);
        Arguments args = arguments(node, 1);
        line_ = node.line;
        return filter(node.name, input, args);
      }
      case Kind::Test: {
        Value input = eval(*c[0]);
        Arguments args = arguments(node, 1);
        line_ = node.line;
        bool result = test(node.name, input, args);
        return Value::from(node.negated ? !result : result);
      }
      case Kind::Neg:
      case Kind::Pos: {
        Value v = eval(*c[0]);
        line_ = node.line;
        require_defined(v);
        if (!v.is_number()) fail(str("bad operand type for unary ", node.kind == Kind::Neg ? "-" : "+", ": '", type_name(v), "'"));
        if (node.kind == Kind::Pos) return is_integral(v) ? Value::from(as_int(v)) : v;
        return is_integral(v) ? Value::from(-as_int(v)) : Value::from(-v.number);
      }
      case Kind::Not: return Value::from(!truthy(eval(*c[0])));
      case Kind::And: {
        Value left = eval(*c[0]);
        return truthy(left) ? eval(*c[1]) : left;
      }
      case Kind::Or: {
        Value left = eval(*c[0]);
        return truthy(left) ? left : eval(*c[1]);
      }
      case Kind::Binary: {
        Value left = eval(*c[0]);
        Value right = eval(*c[1]);
        line_ = node.line;
        return arithmetic(node.name, left, right);
      }
      case Kind::Compare: {
        Value left = eval(*c[0]);
        for (std::size_t i = 0; i < node.names.size(); ++i) {
          Value right = eval(*c[i + 1]);
          line_ = node.line;
          const std::string& op = node.names[i];
          bool ok = op == "==" ? equal(left, right)
                    : op == "!=" ? !equal(left, right)
                    : op == "in" ? contains(right, left)
                    : op == "not in" ? !contains(right, left)
                    : op == "<" ? compare(left, right, "<") < 0
                    : op == ">" ? compare(left, right, ">") > 0
                    : op == "<=" ? compare(left, right, "<=") <= 0
                                 : compare(left, right, ">=") >= 0;
          if (!ok) return Value::from(false);
          left = std::move(right);
        }
        return Value::from(true);
      }
      case Kind::CondExpr: {
        if (truthy(eval(*c[0]))) return eval(*c[1]);
        return c[2] ? eval(*c[2]) : Value::undefined("the inline if-expression evaluated to false and no else section was defined");
      }
      default: fail("internal error: statement node used as an expression");
    }
  }

 private:
  Value lookup(const std::string& name) const {
    for (auto frame = frames_.rbegin(); frame != frames_.rend(); ++frame) {
      auto hit = frame->find(name);
      if (hit != frame->end()) return hit->second;
    }
    return Value::undefined(str("'", name, "' is undefined"));
  }

  void bind(const std::vector<std::string>& names, const Value& value) {
    auto& frame = frames_.back();
    if (names.size() == 1) {
      frame[names[0]] = value;
      return;
    }
    List items = iterate(value);
    if (items.size() != names.size()) {
      fail(str(items.size() < names.size() ? "not enough" : "too many",
               " values to unpack (expected ", names.size(), ", got ", items.size(), ")"));
    }
    for (std::size_t i = 0; i < names.size(); ++i) frame[names[i]] = items[i];
  }

  Arguments arguments(const Node& node, std::size_t first) {
    Arguments args;
    std::size_t i = first;
    for (std::size_t p = 0; p < node.positional; ++p) args.positional.push_back(eval(*node.children[i++]));
    for (const auto& k : node.keywords) args.keyword.emplace_back(k, eval(*node.children[i++]));
    return args;
  }

  Flow exec_for(const Node& node, std::string& out) {
    Value iterable = eval(*node.children[0]);
    line_ = node.line;
    List items = iterate(iterable);
    if (const Node* condition = node.children[3].get()) {
      List kept;
      for (const auto& item : items) {
        frames_.emplace_back();
        bind(node.names, item);
        bool keep = truthy(eval(*condition));
        frames_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (node.has_else) exec(*node.children[2], out);
      return Flow::Normal;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      Value loop = Value::new_dict();
      Dict& d = *loop.dict;
      d.set("index0", Value::from(i));
      d.set("index", Value::from(i + 1));
      d.set("revindex0", Value::from(n - i - 1));
      d.set("revindex", Value::from(n - i));
      d.set("first", Value::from(i == 0));
      d.set("last", Value::from(i == n - 1));
      d.set("length", Value::from(n));
      d.set("depth", Value::from(int64_t{1}));
      d.set("depth0", Value::from(int64_t{0}));
      d.set("previtem", i > 0 ? items[static_cast<std::size_t>(i - 1)] : Value::undefined("there is no previous item"));
      d.set("nextitem", i + 1 < n ? items[static_cast<std::size_t>(i + 1)] : Value::undefined("there is no next item"));
      d.set("cycle", make_function("loop.cycle", [i](const Arguments& a) {
              if (a.positional.empty()) fail("no items for cycling given");
              return a.positional[static_cast<std::size_t>(i) % a.positional.size()];
            }));
      frames_.emplace_back();
      frames_.back()["loop"] = loop;
      bind(node.names, items[static_cast<std::size_t>(i)]);
      Flow flow = exec(*node.children[1], out);
      frames_.pop_back();
      if (flow == Flow::Break) break;
    }
    return Flow::Normal;
  }

  void define_macro(const Node& node) {
    const Node* macro = &node;
    Renderer* self = this;
    frames_.back()[node.name] = make_function(node.name, [macro, self](const Arguments& a) {
      return self->call_macro(*macro, a);
    });
  }

  Value call_macro(const Node& macro, const Arguments& args) {
    if (depth_ > 64) fail("macro recursion is too deep");
    const std::size_t params = macro.names.size();
    if (args.positional.size() > params) fail(str("macro '", macro.name, "' takes not more than ", params, " argument(s)"));
    std::map<std::string, Value> frame;
    for (std::size_t p = 0; p < params; ++p) {
      const std::string& name = macro.names[p];
      bool given = false;
      if (p < args.positional.size()) {
        frame[name] = args.positional[p];
        given = true;
      }
      for (const auto& [k, v] : args.keyword) {
        if (k == name) {
          frame[name] = v;
          given = true;
        }
      }
      if (!given) {
        const Node* fallback = macro.children[1 + p].get();
        frame[name] = fallback ? eval(*fallback) : Value::undefined(str("parameter '", name, "' was not provided"));
      }
    }
    for (const auto& [k, v] : args.keyword) {
      if (std::find(macro.names.begin(), macro.names.end(), k) == macro.names.end()) {
        fail(str("macro '", macro.name, "' takes no keyword argument '", k, "'"));
      }
    }
    // A macro sees the template's top-level names and its arguments, not the caller's locals.
    std::vector<std::map<std::string, Value>> saved = std::move(frames_);
    frames_ = {saved.front(), std::move(frame)};
    int saved_line = line_;
    ++depth_;
    std::string out;
    try {
      exec(*macro.children[0], out);
    } catch (...) {
      --depth_;
      frames_ = std::move(saved);
      throw;
    }
    --depth_;
    frames_ = std::move(saved);
    line_ = saved_line;
    return Value::from(out);
  }

  Value filter(const std::string& name, const Value& input, const Arguments& a);
  bool test(const std::string& name, const Value& input, const Arguments& a);

  std::vector<std::map<std::string, Value>> frames_;
  int line_ = 0;
  int depth_ = 0;
};

Value Renderer::filter(const std::string& name, const Value& in, const Arguments& a) {
  if (name == "trim") {
    Value chars = arg(a, 0, "chars", Value::none());
    std::string s = to_str(in);
    return Value::from(chars.is_none() ? strip(s, nullptr, true, true) : strip(s, &need_string(chars, "trim"), true, true));
  }
  if (name == "length" || name == "count") return Value::from(length(in));
  if (name == "tojson") {
    Value indent = arg(a, 1, "indent", Value::none());
    // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
    Value ensure_ascii = arg(a, 0, "ensure_ascii", Value::from(false));
    if (truthy(ensure_ascii)) fail("tojson(ensure_ascii=True) is not in lmforge's Jinja subset");
    if (!arg(a, 2, "separators", Value::none()).is_none()) fail("tojson(separators=...) is not in lmforge's Jinja subset");
    int width = indent.is_none() ? -1 : static_cast<int>(need_int(indent, "tojson indent"));
    return Value::from(to_json(in, width, truthy(arg(a, 3, "sort_keys", Value::from(false)))));
  }
  if (name == "string") return Value::from(to_str(in));
  if (name == "upper" || name == "lower") return Value::from(ascii_case(to_str(in), name == "upper"));
  if (name == "capitalize") return Value::from(capitalize(to_str(in)));
  if (name == "title") return Value::from(title_case(to_str(in)));
  if (name == "default" || name == "d") {
    bool boolean = truthy(arg(a, 1, "boolean", Value::from(false)));
    if (in.is_undefined() || (boolean && !truthy(in))) return arg(a, 0, "default_value", Value::from(""));
    return in;
  }
  if (name == "join") {
    std::string separator = to_str(arg(a, 0, "d", Value::from("")));
    Value attribute = arg(a, 1, "attribute", Value::none());
    std::string out;
    List items = iterate(in);
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i) out += separator;
      out += to_str(attribute.is_none() ? items[i] : get_item(items[i], attribute));
    }
    return Value::from(out);
  }
  if (name == "first" || name == "last") {
    List items = iterate(in);
    if (items.empty()) return Value::undefined(str("No ", name, " item, sequence was empty."));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value::from(iterate(in));
  if (name == "reverse") {
    if (in.is_string()) {
      std::u32string text = decode(in.text);
      std::reverse(text.begin(), text.end());
      return Value::from(encode(text));
    }
    List items = iterate(in);
    std::reverse(items.begin(), items.end());
    return Value::from(std::move(items));
  }
  if (name == "replace") {
    Value count = arg(a, 2, "count", Value::none());
    return Value::from(replace(to_str(in), to_str(arg(a, 0, "old")), to_str(arg(a, 1, "new")),
                               count.is_none() ? -1 : need_int(count, "replace")));
  }
  if (name == "int") {
    if (is_integral(in)) return Value::from(as_int(in));
    if (in.kind == Value::Kind::Float) return Value::from(static_cast<int64_t>(in.number));
    std::string s = strip(to_str(in), nullptr, true, true);
    int64_t v = 0;
    auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    if (res.ec == std::errc() && res.ptr == s.data() + s.size()) return Value::from(v);
    return arg(a, 0, "default", Value::from(int64_t{0}));
  }
  if (name == "float") {
    if (in.is_number()) return Value::from(as_double(in));
    std::string s = strip(to_str(in), nullptr, true, true);
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size()) return Value::from(v);
    return arg(a, 0, "default", Value::from(0.0));
  }
  if (name == "abs") {
    require_defined(in);
    if (is_integral(in)) return Value::from(std::abs(as_int(in)));
    if (in.kind == Value::Kind::Float) return Value::from(std::fabs(in.number));
    fail(str("bad operand type for abs(): '", type_name(in), "'"));
  }
  if (name == "items") {
    if (in.is_undefined()) return Value::from(List{});
    if (!in.is_dict()) fail(str("Can only get item pairs from a mapping, not '", type_name(in), "'"));
    return items_of(*in.dict);
  }
  if (name == "safe") return in;
  if (name == "escape" || name == "e") return Value::from(html_escape(to_str(in)));
  if (name == "indent") {
    int64_t width = need_int(arg(a, 0, "width", Value::from(int64_t{4})), "indent");
    bool first = truthy(arg(a, 1, "first", Value::from(false)));
    bool blank = truthy(arg(a, 2, "blank", Value::from(false)));
    std::string pad(static_cast<std::size_t>(std::max<int64_t>(0, width)), ' ');
    std::string s = to_str(in), out;
    std::vector<std::string> lines = split(s, Value::from("\n"), -1);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (i) out += "\n";
      bool pad_line = (i > 0 || first) && (blank || !strip(lines[i], nullptr, true, true).empty());
      if (pad_line) out += pad;
      out += lines[i];
    }
    return Value::from(out);
  }
  if (name == "map" || name == "select" || name == "reject" || name == "selectattr" ||
      name == "rejectattr") {
    List items = iterate(in), out;
    if (name == "map") {
      Value attribute = arg(a, 99, "attribute", Value::none());
      if (!attribute.is_none()) {
        Value fallback = arg(a, 99, "default", Value::undefined());
        for (const auto& item : items) {
          Value v = get_item(item, attribute);
          out.push_back(v.is_undefined() && !fallback.is_undefined() ? fallback : v);
        }
      } else {
        if (a.positional.empty()) fail("map requires a filter name or attribute=");
        Arguments rest;
        rest.positional.assign(a.positional.begin() + 1, a.positional.end());
        rest.keyword = a.keyword;
        std::string filter_name = need_string(a.positional[0], "map");
        for (const auto& item : items) out.push_back(filter(filter_name, item, rest));
      }
      return Value::from(std::move(out));
    }
    bool by_attribute = name == "selectattr" || name == "rejectattr";
    bool keep_when = name == "select" || name == "selectattr";
    std::size_t test_at = by_attribute ? 1 : 0;
    Arguments rest;
    if (a.positional.size() > test_at + 1) rest.positional.assign(a.positional.begin() + static_cast<std::ptrdiff_t>(test_at) + 1, a.positional.end());
    for (const auto& item : items) {
      Value subject = by_attribute ? get_item(item, arg(a, 0, "attribute")) : item;
      bool passed = a.positional.size() > test_at
                        ? test(need_string(a.positional[test_at], name.c_str()), subject, rest)
                        : truthy(subject);
      if (passed == keep_when) out.push_back(item);
    }
    return Value::from(std::move(out));
  }
  if (name == "unique") {
    List out;
    for (const auto& item : iterate(in)) {
      if (!contains(Value::from(out), item)) out.push_back(item);
    }
    return Value::from(std::move(out));
  }
  if (name == "sum") {
    Value total = arg(a, 1, "start", Value::from(int64_t{0}));
    Value attribute = arg(a, 0, "attribute", Value::none());
    for (const auto& item : iterate(in)) total = arithmetic("+", total, attribute.is_none() ? item : get_item(item, attribute));
    return total;
  }
  if (name == "min" || name == "max") {
    List items = iterate(in);
    if (items.empty()) return Value::undefined(str("No aggregated item, sequence was empty."));
    Value best = items[0];
    for (const auto& item : items) {
      int c = compare(item, best, "<");
      if (name == "min" ? c < 0 : c > 0) best = item;
    }
    return best;
  }
  if (name == "wordcount") {
    // Jinja2 counts runs of \w; outside ASCII every non-space character counts as a word character.
    int64_t words = 0;
    bool inside = false;
    for (uint32_t c : decode(to_str(in))) {
      bool word = c < 128 ? (std::isalnum(static_cast<int>(c)) || c == '_') : !is_space(c);
      if (word && !inside) ++words;
      inside = word;
    }
    return Value::from(words);
  }
  fail(str("No filter named '", name, "'."));
}

bool Renderer::test(const std::string& name, const Value& in, const Arguments& a) {
  using K = Value::Kind;
  if (name == "defined") return !in.is_undefined();
  if (name == "undefined") return in.is_undefined();
  if (name == "none") return in.is_none();
  if (name == "boolean") return in.kind == K::Bool;
  if (name == "true") return in.kind == K::Bool && in.boolean;
  if (name == "false") return in.kind == K::Bool && !in.boolean;
  if (name == "integer") return in.kind == K::Int;
  if (name == "float") return in.kind == K::Float;
  if (name == "number") return in.is_number();
  if (name == "string") return in.is_string();
  if (name == "mapping") return in.is_dict() && !in.dict->is_namespace;
  if (name == "sequence") return in.is_string() || in.is_list() || (in.is_dict() && !in.dict->is_namespace);
  if (name == "iterable") return in.is_string() || in.is_list() || (in.is_dict() && !in.dict->is_namespace) || in.is_undefined();
  if (name == "callable") return in.kind == K::Function;
  if (name == "odd" || name == "even") {
    int64_t v = need_int(in, name.c_str());
    return ((v % 2) != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    int64_t d = need_int(arg(a, 0, "num"), "divisibleby");
    if (d == 0) fail("integer division or modulo by zero");
    return need_int(in, "divisibleby") % d == 0;
  }
  if (name == "lower" || name == "upper") {
    std::string s = to_str(in);
    return s == ascii_case(s, name == "upper");
  }
  if (name == "eq" || name == "equalto" || name == "==") return equal(in, arg(a, 0, "b"));
  if (name == "ne" || name == "!=") return !equal(in, arg(a, 0, "b"));
  if (name == "lt" || name == "lessthan" || name == "<") return compare(in, arg(a, 0, "b"), "<") < 0;
  if (name == "le" || name == "<=") return compare(in, arg(a, 0, "b"), "<=") <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return compare(in, arg(a, 0, "b"), ">") > 0;
  if (name == "ge" || name == ">=") return compare(in, arg(a, 0, "b"), ">=") >= 0;
  if (name == "in") return contains(arg(a, 0, "seq"), in);
  if (name == "sameas") {
    Value other = arg(a, 0, "other");
    if (in.is_list() && other.is_list()) return in.list == other.list;
    if (in.is_dict() && other.is_dict()) return in.dict == other.dict;
    return in.kind == other.kind && (in.kind == K::None || (in.kind == K::Bool && in.boolean == other.boolean));
  }
  fail(str("No test named '", name, "'."));
}

Value make_globals_range() {
  return make_function("range", [](const Arguments& a) {
    int64_t start = 0, stop = 0, step = 1;
    if (a.positional.size() == 1) {
      stop = need_int(a.positional[0], "range");
    } else if (a.positional.size() >= 2) {
      start = need_int(a.positional[0], "range");
      stop = need_int(a.positional[1], "range");
      if (a.positional.size() > 2) step = need_int(a.positional[2], "range");
    } else {
      fail("range expected at least 1 argument, got 0");
    }
    if (step == 0) fail("range() arg 3 must not be zero");
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() >= 100000) fail("range too big (more than 100000 items)");
      out.push_back(Value::from(i));
    }
    return Value::from(std::move(out));
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Template

Template::Template(std::string_view source, std::string name) : name_(std::move(name)) {
  try {
    Lexer lexer(source);
    Parser parser(lexer.run());
    root_ = parser.parse_template();
  } catch (const SyntaxError& e) {
    throw Error(str(name_, " line ", e.line, ": template syntax error: ", e.message));
  }
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const std::vector<std::pair<std::string, Value>>& variables) const {
  std::map<std::string, Value> globals;
  globals["range"] = make_globals_range();
  globals["dict"] = make_function("dict", [](const Arguments& a) {
    Value d = Value::new_dict();
    if (!a.positional.empty()) {
      if (!a.positional[0].is_dict()) fail("dict() takes a mapping");
      d.dict->items = a.positional[0].dict->items;
    }
    for (const auto& [k, v] : a.keyword) d.dict->set(k, v);
    return d;
  });
  globals["namespace"] = make_function("namespace", [](const Arguments& a) {
    Value ns = Value::new_namespace();
    if (!a.positional.empty()) {
      if (!a.positional[0].is_dict()) fail("namespace() takes a mapping");
      ns.dict->items = a.positional[0].dict->items;
    }
    for (const auto& [k, v] : a.keyword) ns.dict->set(k, v);
    return ns;
  });
  globals["raise_exception"] = make_function("raise_exception", [](const Arguments& a) -> Value {
    fail(to_str(arg(a, 0, "message")));
  });
  globals["strftime_now"] = make_function("strftime_now", [](const Arguments& a) {
    std::string format = need_string(arg(a, 0, "format"), "strftime_now");
    std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[512];
    std::size_t n = std::strftime(buf, sizeof(buf), format.c_str(), &local);
    return Value::from(std::string(buf, n));
  });
  for (const auto& [k, v] : variables) globals[k] = v;
  Renderer renderer({std::move(globals)});
  std::string out;
  try {
    renderer.exec(*root_, out);
  } catch (const RenderError& e) {
    throw Error(str(name_, " line ", renderer.line(), ": ", e.message));
  }
  return out;
}

}  // namespace lmf::data::jinja
