// Numeric command-line options: every one is range-checked as text before CLI11 converts it
// (CLI11 itself reads "-1" into an unsigned as 2^64-1, saturates 2^64 and reads 010 as octal), so
// a bad value is a parse error naming the option, never a silently wrapped number.
#pragma once
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

#include "io/safe_file.h"
#include "lmforge/core/error.h"

namespace lmf::cli {

/// An integer option accepting only decimal text in [low, high].
template <class T>
CLI::Option* add_integer(CLI::App* cmd, const std::string& name, T& value, T low, T high,
                         const std::string& description) {
  static_assert(std::is_integral_v<T>);
  auto check = [low, high](std::string& text) -> std::string {
    try {
      if constexpr (std::is_unsigned_v<T> && sizeof(T) == 8) {
        const std::uint64_t v = io::parse_uint64(text, "value");
        if (v < low || v > high) throw Error("out of range");
      } else {
        io::parse_int_in_range(text, static_cast<std::int64_t>(low), static_cast<std::int64_t>(high),
                               "value");
      }
      return {};
    } catch (const Error&) {
      return str("expected a decimal integer in [", low, ", ", high, "], got '", io::clip(text, 40), "'");
    }
  };
  return cmd->add_option(name, value, description)->check(CLI::Validator(check, "", ""));
}

/// A real option accepting only finite numbers in [low, high].
template <class T>
CLI::Option* add_real(CLI::App* cmd, const std::string& name, T& value, double low, double high,
                      const std::string& description) {
  auto check = [low, high](std::string& text) -> std::string {
    char* end = nullptr;
    const double v = text.empty() ? NAN : std::strtod(text.c_str(), &end);
    if (end == text.c_str() + text.size() && std::isfinite(v) && v >= low && v <= high) return {};
    return str("expected a number in [", low, ", ", high, "], got '", io::clip(text, 40), "'");
  };
  return cmd->add_option(name, value, description)->check(CLI::Validator(check, "", ""));
}

}  // namespace lmf::cli
