// bench_gelu: GELU (tanh) forward and backward in GB/s and % of the measured copy bandwidth, bf16,
// over MLP activations (B * T rows of 4 C: GPT-2 124M with B * T = 8 * 1024 and 32 * 1024, and
// wider models). Bytes: fwd 2 n (x read, y written), bwd 3 n (dy, x read, dx written). The
// PyTorch peer is bench/peers/gelu.py.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "bench/rows_bench.hpp"
#include "kernels/gelu/gelu_ref.hpp"
#include "kiln/gelu.h"

namespace {

using kiln::bench::DType;
using namespace kiln::bench::rows;

// A few thousand elements at the start, the middle and the end.
bool check(const char* what, std::int64_t n, const bf16* x, const bf16* dy, const bf16* out,
           bool backward) {
  const std::int64_t span = std::min<std::int64_t>(n, 4096);
  for (const std::int64_t at : {std::int64_t{0}, (n - span) / 2, n - span}) {
    const auto xs = to_double(download(x, at, span));
    std::vector<double> ref(span);
    if (backward) {
      kiln::ref::gelu_bwd_ref<double>(ref.data(), to_double(download(dy, at, span)).data(),
                                      xs.data(), span);
    } else {
      kiln::ref::gelu_fwd_ref<double>(ref.data(), xs.data(), span);
    }
    if (!close_enough(std::string("bench_gelu ") + what, ref, download(out, at, span), 2e-2))
      return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const auto options =
      kiln::bench::parse_options(argc, argv, "kiln GELU (tanh) forward / backward GB/s (bf16)");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("gelu", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    std::vector<RowShape> shapes = {{8192, 3072}};
    if (!options.quick) shapes = {{8192, 3072}, {32768, 3072}, {8192, 6400}, {8192, 16384}};
    for (const RowShape& s : shapes) {
      const std::int64_t n = s.N * s.C;
      const std::string shape = s.str() + " (n=" + std::to_string(n) + ")";
      Buf<bf16> x(n), y(n), dy(n), dx(n);
      kiln::bench::fill_random(x.p, n, DType::bf16, 1, -4.f, 4.f, stream);
      kiln::bench::fill_random(dy.p, n, DType::bf16, 2, -1.f, 1.f, stream);
      const double bytes = static_cast<double>(n) * sizeof(bf16);
      auto add = [&](const char* op, double ms, double b) {
        report.add(nlohmann::json{{"op", op},
                                  {"impl", "kiln"},
                                  {"shape", shape},
                                  {"n", n},
                                  {"dtype", "bf16"},
                                  {"ms", ms},
                                  {"bytes", b},
                                  {"gbps", kiln::bench::gbps(b, ms)}});
      };
      const std::function<void(cudaStream_t)> fwd = [&](cudaStream_t st) {
        kiln::gelu_fwd(y.p, x.p, n, KILN_DTYPE_BF16, st);
      };
      const std::function<void(cudaStream_t)> bwd = [&](cudaStream_t st) {
        kiln::gelu_bwd(dx.p, dy.p, x.p, n, KILN_DTYPE_BF16, st);
      };
      fwd(stream);
      bwd(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (check("fwd", n, x.p, dy.p, y.p, false)) {
        const auto t = kiln::bench::time_region(fwd, stream, options);
        add("gelu_fwd", t.median_ms, 2 * bytes);
      }
      if (check("bwd", n, x.p, dy.p, dx.p, true)) {
        const auto t = kiln::bench::time_region(bwd, stream, options);
        add("gelu_bwd", t.median_ms, 3 * bytes);
      }
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_gelu: %s\n", e.what());
    return 1;
  }
  return kiln::bench::exit_status();
}
