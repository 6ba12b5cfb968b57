// Argument checks shared by the element- and row-wise ops (LayerNorm, RMSNorm, softmax, GELU,
// SwiGLU, rotary). Each throws kiln::Error(invalid_argument) naming the op and the argument; the
// C entries run them all before anything is launched.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "errors/check.hpp"
#include "kiln/core.h"

namespace kiln::impl::args {

inline std::size_t dtype_size(kiln_dtype_t dtype) {
  return dtype == KILN_DTYPE_BF16 ? 2 : 4;
}

inline void check_dtype(const char* op, kiln_dtype_t dtype) {
  KILN_CHECK_ARG(dtype == KILN_DTYPE_BF16 || dtype == KILN_DTYPE_F32, op, ": dtype ",
                 static_cast<int>(dtype), " is not KILN_DTYPE_BF16 or KILN_DTYPE_F32");
}

// Rows N in [0, 2^31 - 1] and row width C in [1, 2^31 - 4] (C rounded up to 16 bytes of floats,
// the norm backward's partial-row stride, stays an int), N * C elements addressable.
inline void check_rows(const char* op, std::int64_t N, std::int64_t C) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max();
  KILN_CHECK_ARG(N >= 0 && N <= kMax, op, ": N must be in [0, 2^31 - 1] (got ", N, ")");
  KILN_CHECK_ARG(C >= 1 && C <= kMax - 3, op, ": C must be in [1, 2^31 - 4] (got ", C, ")");
  KILN_CHECK_ARG(N <= std::numeric_limits<std::int64_t>::max() / 8 / C, op, ": N * C = ", N, " * ",
                 C, " elements is too many");
}

// A tensor operand: non-null and 16-byte aligned (the kernels move 16-byte vectors).
inline void check_tensor(const char* op, const char* name, const void* p) {
  KILN_CHECK_ARG(p != nullptr, op, ": ", name, " is null");
  KILN_CHECK_ARG(is_aligned(p, 16), op, ": ", name, " (", p, ") is not 16-byte aligned");
}
// A per-row or per-column fp32 array: 4-byte aligned; null only where `optional`.
inline void check_floats(const char* op, const char* name, const void* p, bool optional) {
  KILN_CHECK_ARG(optional || p != nullptr, op, ": ", name, " is null");
  KILN_CHECK_ARG(is_aligned(p, 4), op, ": ", name, " (", p, ") is not 4-byte aligned");
}

// [a, a + a_bytes) and [b, b + b_bytes) share a byte.
inline bool overlap(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes) {
  if (!a || !b || a_bytes == 0 || b_bytes == 0) return false;
  const auto x = reinterpret_cast<std::uintptr_t>(a), y = reinterpret_cast<std::uintptr_t>(b);
  return x < y + b_bytes && y < x + a_bytes;
}
inline void check_disjoint(const char* op, const char* a_name, const void* a, std::size_t a_bytes,
                           const char* b_name, const void* b, std::size_t b_bytes) {
  KILN_CHECK_ARG(!overlap(a, a_bytes, b, b_bytes), op, ": ", a_name, " and ", b_name, " overlap");
}

// A positive scalar the kernels take as a float: it must stay a normal float there (an eps that
// flushes to 0 would give a constant row rstd = inf; a scale past FLT_MAX would be inf).
inline bool is_normal_float(double x) {
  return std::isfinite(x) && x >= std::numeric_limits<float>::min() &&
         x <= std::numeric_limits<float>::max();
}
inline void check_eps(const char* op, double eps) {
  KILN_CHECK_ARG(is_normal_float(eps), op,
                 ": eps must be finite and > 0, a normal fp32 value (about 1.2e-38 to 3.4e38; got ",
                 eps, ")");
}

}  // namespace kiln::impl::args
