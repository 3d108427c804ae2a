// lmf::Error: the one exception type of lmforge. Messages carry their context (file, key, line,
// shape) so that the CLI can print a single clear line and exit non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace lmf {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// Concatenates any streamable values into a string: str("shape ", 3, "x", 4).
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

}  // namespace lmf

/// Throws lmf::Error with the streamed message when `cond` is false.
#define LMF_CHECK(cond, ...)                                  \
  do {                                                        \
    if (!(cond)) throw ::lmf::Error(::lmf::str(__VA_ARGS__)); \
  } while (0)
