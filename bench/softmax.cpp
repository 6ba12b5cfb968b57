// bench_softmax: row softmax forward (with scale, causal and not) and backward in GB/s and % of
// the measured copy bandwidth, bf16, over attention-score shapes (B * NH * T rows of T columns,
// about 2^27 elements or B * NH = 96 as GPT-2 124M's 8 x 12) and model-width rows. Bytes: fwd
// 2 N C (x read, y written, whole rows even when causal: the kernel skips reading the masked half,
// which shows as a higher figure), bwd 3 N C (dy, y read, dx written). The PyTorch peer is
// bench/peers/softmax.py.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/harness/harness.hpp"
#include "bench/rows_bench.hpp"
#include "kernels/softmax/softmax_ref.hpp"
#include "kiln/softmax.h"

namespace {

using kiln::bench::DType;
using namespace kiln::bench::rows;

struct Case {
  RowShape s;
  bool causal;
  std::string str() const { return s.str() + (causal ? " causal" : ""); }
};

std::vector<Case> cases(bool quick) {
  std::vector<Case> out;
  const std::vector<std::int64_t> lengths =
      quick ? std::vector<std::int64_t>{1024} : std::vector<std::int64_t>{512, 1024, 2048, 4096};
  for (const std::int64_t T : lengths) {
    const std::int64_t bnh = std::min<std::int64_t>(96, (std::int64_t{1} << 27) / (T * T));
    for (const bool causal : {false, true})
      out.push_back({{bnh * T, T}, causal});
  }
  if (!quick) {
    for (const RowShape& s : row_shapes(false))
      if (s.N == 8192) out.push_back({s, false});
  }
  return out;
}

bool check_fwd(const Case& c, double scale, const bf16* x, const bf16* y) {
  const RowShape& s = c.s;
  for (const std::int64_t r : spot_rows(s.N)) {
    // Row r sees columns 0 .. last: a plain softmax over those, zeros after.
    const std::int64_t last = c.causal ? r % s.C : s.C - 1;
    const auto xr = to_double(download(x, r * s.C, s.C));
    std::vector<double> ref(s.C, 0.0);
    kiln::ref::softmax_fwd_ref<double>(ref.data(), xr.data(), 1, last + 1, scale, false);
    if (!close_enough("bench_softmax fwd " + c.str(), ref, download(y, r * s.C, s.C), 2e-2))
      return false;
  }
  return true;
}

bool check_bwd(const Case& c, double scale, const bf16* dy, const bf16* y, const bf16* dx) {
  const RowShape& s = c.s;
  for (const std::int64_t r : spot_rows(s.N)) {
    std::vector<double> ref(s.C);
    kiln::ref::softmax_bwd_ref<double>(ref.data(), to_double(download(dy, r * s.C, s.C)).data(),
                                       to_double(download(y, r * s.C, s.C)).data(), 1, s.C, scale);
    if (!close_enough("bench_softmax bwd " + c.str(), ref, download(dx, r * s.C, s.C), 2e-2))
      return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const auto options =
      kiln::bench::parse_options(argc, argv, "kiln softmax forward / backward GB/s (bf16)");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("softmax", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    for (const Case& c : cases(options.quick)) {
      const RowShape& s = c.s;
      const double scale = 1.0 / std::sqrt(64.0);  // head dim 64
      const std::size_t n = static_cast<std::size_t>(s.N * s.C);
      Buf<bf16> x(n), y(n), dy(n), dx(n);
      kiln::bench::fill_random(x.p, n, DType::bf16, 1, -8.f, 8.f, stream);
      kiln::bench::fill_random(dy.p, n, DType::bf16, 2, -1.f, 1.f, stream);
      const double row = static_cast<double>(n) * sizeof(bf16);
      auto add = [&](const char* op, double ms, double bytes) {
        report.add(nlohmann::json{{"op", op},
                                  {"impl", "kiln"},
                                  {"shape", c.str()},
                                  {"N", s.N},
                                  {"C", s.C},
                                  {"causal", c.causal},
                                  {"dtype", "bf16"},
                                  {"ms", ms},
                                  {"bytes", bytes},
                                  {"gbps", kiln::bench::gbps(bytes, ms)}});
      };
      const std::function<void(cudaStream_t)> fwd = [&](cudaStream_t st) {
        kiln::softmax_fwd(y.p, x.p, s.N, s.C, scale, c.causal, KILN_DTYPE_BF16, st);
      };
      fwd(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (check_fwd(c, scale, x.p, y.p)) {
        const auto t = kiln::bench::time_region(fwd, stream, options);
        add("softmax_fwd", t.median_ms, 2 * row);
      }
      if (c.causal) continue;  // the backward does not depend on the mask
      const std::function<void(cudaStream_t)> bwd = [&](cudaStream_t st) {
        kiln::softmax_bwd(dx.p, dy.p, y.p, s.N, s.C, scale, KILN_DTYPE_BF16, st);
      };
      bwd(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (check_bwd(c, scale, dy.p, y.p, dx.p)) {
        const auto t = kiln::bench::time_region(bwd, stream, options);
        add("softmax_bwd", t.median_ms, 3 * row);
      }
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_softmax: %s\n", e.what());
    return 1;
  }
  return kiln::bench::exit_status();
}
