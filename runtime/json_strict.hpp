// Internal: strict reads of JSON values from files (checkpoint metadata and index, training
// config, Hugging Face config). nlohmann's get<int64_t>() converts a float (1e181: undefined
// behaviour) and get<uint64_t>() wraps a negative number; these accept an integer only when it
// is a JSON integer within the range asked for, and a float only when it is finite. A missing key
// throws nlohmann::json::out_of_range as at() does; a bad value throws
// kiln::Error(invalid_argument) naming the key, the range and the value.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"

namespace kiln::impl {

// j.at(key) as an integer in [lo, hi].
inline int64_t json_int(const nlohmann::json& j, const char* key,
                        int64_t lo = std::numeric_limits<int64_t>::min(),
                        int64_t hi = std::numeric_limits<int64_t>::max()) {
  const nlohmann::json& v = j.at(key);
  bool ok = v.is_number_integer();
  int64_t x = 0;
  if (ok && v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    ok = u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    x = ok ? static_cast<int64_t>(u) : 0;
  } else if (ok) {
    x = v.get<int64_t>();
  }
  KILN_CHECK_ARG(ok && x >= lo && x <= hi, "'", key, "' must be an integer in [", lo, ", ", hi,
                 "] (got ", v.dump(), ")");
  return x;
}

// j.at(key) as an unsigned 64-bit integer (seeds, fingerprints).
inline uint64_t json_uint64(const nlohmann::json& j, const char* key) {
  const nlohmann::json& v = j.at(key);
  const bool ok = v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  KILN_CHECK_ARG(ok, "'", key, "' must be an integer in [0, 2^64) (got ", v.dump(), ")");
  return v.get<uint64_t>();
}

// j.at(key) as a finite number (an integer is accepted).
inline double json_double(const nlohmann::json& j, const char* key) {
  const nlohmann::json& v = j.at(key);
  const bool ok = v.is_number() && std::isfinite(v.get<double>());
  KILN_CHECK_ARG(ok, "'", key, "' must be a finite number (got ", v.dump(), ")");
  return v.get<double>();
}

// j.at(key) as a boolean, or a string.
inline bool json_bool(const nlohmann::json& j, const char* key) {
  const nlohmann::json& v = j.at(key);
  KILN_CHECK_ARG(v.is_boolean(), "'", key, "' must be true or false (got ", v.dump(), ")");
  return v.get<bool>();
}

}  // namespace kiln::impl
