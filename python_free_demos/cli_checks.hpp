// Option checks shared by the demos: a value out of range, NaN, infinite or not an integer, and an
// option that means nothing for the chosen backend, are refused before anything runs, with one
// line naming the option and what it accepts (CLI11 prints "--option: <message>", exit code 105;
// check_exclusive's messages name their options themselves).
#pragma once

#include <CLI/CLI.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

namespace demo_cli {

inline std::string number_text(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

// A finite number in [lo, hi]; an open end excludes its bound.
inline CLI::Validator number(double lo, double hi, bool lo_open = false, bool hi_open = false) {
  const std::string range = std::string(lo_open ? "(" : "[") + number_text(lo) + ", " +
                            number_text(hi) + (hi_open ? ")" : "]");
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        const bool parsed = !s.empty() && end == s.c_str() + s.size();
        const bool ok = parsed && std::isfinite(v) && (lo_open ? v > lo : v >= lo) &&
                        (hi_open ? v < hi : v <= hi);
        return ok ? std::string() : "must be a finite number in " + range + " (got '" + s + "')";
      },
      "FLOAT in " + range);
}

// An integer in [lo, hi] (no fraction, no exponent).
inline CLI::Validator integer(int64_t lo, int64_t hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        int64_t v = 0;
        const char* first = s.c_str() + (s.size() > 1 && s[0] == '+' ? 1 : 0);
        const auto [ptr, ec] = std::from_chars(first, s.c_str() + s.size(), v);
        const bool ok =
            !s.empty() && ec == std::errc() && ptr == s.c_str() + s.size() && v >= lo && v <= hi;
        return ok ? std::string() : "must be an integer in " + range + " (got '" + s + "')";
      },
      "INT in " + range);
}

// An unsigned 64-bit integer (seeds): no sign, fraction or exponent.
inline CLI::Validator unsigned64() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        uint64_t v = 0;
        const auto [ptr, ec] = std::from_chars(s.c_str(), s.c_str() + s.size(), v);
        const bool ok = !s.empty() && ec == std::errc() && ptr == s.c_str() + s.size();
        return ok ? std::string() : "must be an integer in [0, 2^64) (got '" + s + "')";
      },
      "UINT64");
}

// Throws (for CLI11 to print) when `option` was given although `why` makes it meaningless.
inline void refuse_given(const CLI::App& app, const std::string& option, bool meaningless,
                         const std::string& why) {
  if (meaningless && app.count(option) > 0) {
    throw CLI::ValidationError(option, "means nothing " + why);
  }
}

}  // namespace demo_cli
