// Shared pieces of the row-op benchmarks (bench_layernorm, bench_rmsnorm, bench_softmax,
// bench_gelu): device buffers, spot checks of a few rows against the double reference before
// anything is timed (the GPU tests do the full comparison), and the shapes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "errors/check.hpp"

namespace kiln::bench::rows {

using bf16 = __nv_bfloat16;
using kiln::bench::Buf;  // so that `using namespace rows` brings it too

// count elements from p + offset, as floats.
template <typename T>
std::vector<float> download(const T* p, std::size_t offset, std::size_t count) {
  std::vector<T> h(count);
  KILN_CUDA_CHECK(cudaMemcpy(h.data(), p + offset, count * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> f(count);
  for (std::size_t i = 0; i < count; ++i) {
    if constexpr (std::is_same_v<T, bf16>) {
      f[i] = __bfloat162float(h[i]);
    } else {
      f[i] = static_cast<float>(h[i]);
    }
  }
  return f;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// The rows a spot check looks at: first, middle, last.
inline std::vector<std::int64_t> spot_rows(std::int64_t N) {
  std::vector<std::int64_t> r = {0, N / 2, N - 1};
  r.erase(std::unique(r.begin(), r.end()), r.end());
  return r;
}

// max |got - ref| <= tol * max(1, max |ref|); prints why not.
inline bool close_enough(const std::string& what, const std::vector<double>& ref,
                         const std::vector<float>& got, double tol) {
  double worst = 0, scale = 1;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::fabs(ref[i]));
    const double e = std::fabs(ref[i] - got[i]);
    if (!(e <= worst)) worst = e;  // NaN counts as the worst
  }
  if (worst <= tol * scale) return true;
  kiln::bench::check_failed(what + ": off by " + std::to_string(worst) + " at a spot check");
  return false;
}

struct RowShape {
  std::int64_t N, C;
  std::string str() const { return "N=" + std::to_string(N) + " C=" + std::to_string(C); }
};

// GPT-2 124M (B * T = 8 * 1024 rows of C = 768), the wider GPT-2 / GPT-3 / LLaMA hidden sizes,
// and more rows (B * T = 32 * 1024) at the smaller widths.
inline std::vector<RowShape> row_shapes(bool quick) {
  if (quick) return {{8192, 768}, {8192, 4096}};
  std::vector<RowShape> out;
  for (const std::int64_t C : {768, 1024, 1600, 2048, 4096, 5120, 8192, 12288})
    out.push_back({8192, C});
  for (const std::int64_t C : {768, 1024, 2048})
    out.push_back({32768, C});
  return out;
}

}  // namespace kiln::bench::rows
