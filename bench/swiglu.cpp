// bench_swiglu: SwiGLU forward and backward in GB/s and % of the measured copy bandwidth, bf16,
// over B * T = 8192 tokens of Llama-family MLPs: SmolLM2-135M (I 1536), SmolLM2-360M (2560),
// Llama-3.2-1B (8192), Llama-3.1-8B (14336). Bytes: fwd 3 N I (gate and up read, out written),
// bwd 5 N I (gate, up, dout read, both gradients written), times 2 for bf16. The backward is
// timed out of place (the runtime calls it in place: the same bytes). The PyTorch peer is
// bench/peers/swiglu.py.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "bench/rows_bench.hpp"
#include "kernels/swiglu/swiglu_ref.hpp"
#include "kiln/swiglu.h"

namespace {

using kiln::bench::DType;
using namespace kiln::bench::rows;

// Rows first, middle and last: the kernel's output against the reference on its inputs.
bool check(const char* what, std::int64_t N, std::int64_t I, const bf16* gu, const bf16* dout,
           const bf16* result, bool backward) {
  for (const std::int64_t n : spot_rows(N)) {
    const auto g = to_double(download(gu, n * 2 * I, 2 * I));
    const std::int64_t width = backward ? 2 * I : I;
    std::vector<double> ref(width);
    if (backward) {
      kiln::ref::swiglu_bwd_ref<double>(ref.data(), to_double(download(dout, n * I, I)).data(),
                                        g.data(), 1, I);
    } else {
      kiln::ref::swiglu_fwd_ref<double>(ref.data(), g.data(), 1, I);
    }
    if (!close_enough(std::string("bench_swiglu ") + what, ref, download(result, n * width, width),
                      2e-2))
      return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const auto options =
      kiln::bench::parse_options(argc, argv, "kiln SwiGLU forward / backward GB/s (bf16)");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("swiglu", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    std::vector<RowShape> shapes = {{8192, 8192}};
    if (!options.quick) shapes = {{8192, 1536}, {8192, 2560}, {8192, 8192}, {8192, 14336}};
    for (const RowShape& s : shapes) {
      const std::int64_t N = s.N, I = s.C, n = N * I;
      const std::string shape = "N=" + std::to_string(N) + " I=" + std::to_string(I);
      Buf<bf16> gu(2 * n), out(n), dout(n), dgu(2 * n);
      kiln::bench::fill_random(gu.p, 2 * n, DType::bf16, 1, -6.f, 6.f, stream);
      kiln::bench::fill_random(dout.p, n, DType::bf16, 2, -1.f, 1.f, stream);
      const double bytes = static_cast<double>(n) * sizeof(bf16);
      auto add = [&](const char* op, double ms, double b) {
        report.add(nlohmann::json{{"op", op},
                                  {"impl", "kiln"},
                                  {"shape", shape},
                                  {"N", N},
                                  {"I", I},
                                  {"dtype", "bf16"},
                                  {"ms", ms},
                                  {"bytes", b},
                                  {"gbps", kiln::bench::gbps(b, ms)}});
      };
      const std::function<void(cudaStream_t)> fwd = [&](cudaStream_t st) {
        kiln::swiglu_fwd(out.p, gu.p, N, I, KILN_DTYPE_BF16, st);
      };
      const std::function<void(cudaStream_t)> bwd = [&](cudaStream_t st) {
        kiln::swiglu_bwd(dgu.p, dout.p, gu.p, N, I, KILN_DTYPE_BF16, st);
      };
      fwd(stream);
      bwd(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (check("fwd", N, I, gu.p, dout.p, out.p, false)) {
        add("swiglu_fwd", kiln::bench::time_region(fwd, stream, options).median_ms, 3 * bytes);
      }
      if (check("bwd", N, I, gu.p, dout.p, dgu.p, true)) {
        add("swiglu_bwd", kiln::bench::time_region(bwd, stream, options).median_ms, 5 * bytes);
      }
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_swiglu: %s\n", e.what());
    return 1;
  }
  return 0;
}
