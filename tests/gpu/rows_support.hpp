// Helpers of the row-op GPU tests (layernorm, rmsnorm, softmax, gelu): the shape grid, host data
// rounded to the device type, and error scales.
#pragma once

#include <catch2/catch.hpp>

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "kiln/core.h"
#include "tests/common/support.hpp"

namespace kiln::test::rows {

using bf16 = __nv_bfloat16;

template <typename T>
constexpr bool kIsBf16 = std::is_same_v<T, bf16>;
template <typename T>
constexpr kiln_dtype_t kDtype = kIsBf16<T> ? KILN_DTYPE_BF16 : KILN_DTYPE_F32;
template <typename T>
const char* dtype_name() {
  return kIsBf16<T> ? "bf16" : "fp32";
}

struct Shape {
  std::int64_t N, C;
  std::size_t elems() const { return static_cast<std::size_t>(N * C); }
};

inline std::string describe(const char* dtype, const Shape& s) {
  std::ostringstream os;
  os << dtype << " N " << s.N << " C " << s.C;
  return os.str();
}

// The grid: every C of the brief (GPT-2 sizes and wider) with 1 row, a few rows, and many rows
// (about 8M elements, over 100k rows where C is small), plus widths that probe each thread
// mapping's edges: one vector per row (C = 8), sub-warp groups (40), partial whole-warp rows
// (136, 264), the first block-per-row widths (1032, 2056), the widest vectorized rows (16384) and
// the first past them (16392), and C that no vector divides (1, 7, 100, 769). Quick mode
// (sanitizers, which slow every shared-memory access a hundredfold) keeps C <= 4096 and at most
// 300 rows.
// The smoke set (scripts/gpu-window.sh): one small shape per thread mapping of the grid above
// (sub-warp groups, whole warps, a block per row, the widest vectorized rows and past them).
inline std::vector<Shape> smoke_shapes() {
  return {{37, 7}, {37, 40}, {37, 264}, {5, 1032}, {3, 8192}, {2, 16392}};
}

inline std::vector<Shape> grid(bool with_probes = true) {
  const bool quick = quick_mode();
  const std::int64_t big_cs[] = {1, 7, 64, 768, 1024, 1600, 2048, 4096, 8192, 12288};
  std::vector<Shape> out;
  for (const std::int64_t C : big_cs) {
    if (quick && C > 4096) continue;
    std::int64_t many = std::min<std::int64_t>(100003, (std::int64_t{8} << 20) / C);
    if (quick) many = std::min<std::int64_t>(many, 300);
    for (const std::int64_t N : {std::int64_t{1}, std::int64_t{37}, many})
      out.push_back({N, C});
  }
  if (with_probes) {
    for (const std::int64_t C : {8, 40, 100, 136, 264, 769, 1032, 2056, 16384, 16392}) {
      if (quick && C > 4096) continue;
      for (const std::int64_t N : {1, 515})
        out.push_back({N, C});
    }
  }
  return out;
}

// Host values as the device stores them: rounded to T, kept as float.
template <typename T>
std::vector<float> stored(const std::vector<float>& v) {
  return kIsBf16<T> ? round_to_bf16(v) : v;
}
template <typename T>
std::vector<T> to_device(const std::vector<float>& v) {
  if constexpr (kIsBf16<T>) {
    return to_bf16(v);
  } else {
    return v;
  }
}
template <typename T>
std::vector<double> from_device(const std::vector<T>& v) {
  return to_double(v);
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (const double x : v)
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  return m;
}

// The absolute term of the tolerance rule: a small fraction of the tensor's scale. bf16 outputs:
// a sixteenth of a bf16 ulp at the peak (the baseline's own rounding error is up to half an ulp,
// so this only covers the case of a baseline that happens to be exact); fp32 outputs: about 8
// fp32 ulps at the peak (summation orders differ).
template <typename T>
double atol_for(const std::vector<double>& reference) {
  const double scale = std::max(max_abs(reference), 1e-30);
  return kIsBf16<T> ? scale * std::ldexp(1.0, -8) / 16 : scale * std::ldexp(1.0, -23) * 8;
}
// fp32 statistics and parameter gradients (written in fp32 whatever T is).
inline double atol_fp32(const std::vector<double>& reference, double ulps = 8) {
  return std::max(max_abs(reference), 1e-30) * std::ldexp(1.0, -23) * ulps;
}

// An informative REQUIRE on a kiln status.
#define KILN_REQUIRE_OK(call)                                                         \
  do {                                                                                \
    const kiln_status_t kiln_st_ = (call);                                            \
    INFO(#call << " -> " << kiln_status_name(kiln_st_) << ": " << kiln_last_error()); \
    REQUIRE(kiln_st_ == KILN_STATUS_OK);                                              \
  } while (0)

}  // namespace kiln::test::rows
