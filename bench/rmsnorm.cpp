// bench_rmsnorm: RMSNorm forward, fused residual + RMSNorm forward (a Llama block's pre-norm) and
// backward (dx, dgamma, finalize included) in GB/s and % of the measured copy bandwidth, bf16, on
// the shapes of bench_layernorm. Bytes: fwd 2 N C + C bf16 + N fp32; residual fwd 4 N C (a, b
// read, residual, y written) + C bf16 + N fp32; bwd 4 N C (dy, x, dx read and written) + C bf16 +
// N + 2 C fp32. The PyTorch peer is bench/peers/rmsnorm.py.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <functional>
#include <vector>

#include "bench/harness/harness.hpp"
#include "bench/rows_bench.hpp"
#include "kernels/norm/rmsnorm_ref.hpp"
#include "kiln/rmsnorm.h"

namespace {

using kiln::bench::DType;
using namespace kiln::bench::rows;

constexpr double kEps = 1e-6;

bool check_fwd(const RowShape& s, const bf16* x, const bf16* g, const bf16* y) {
  const auto gamma = to_double(download(g, 0, s.C));
  for (const std::int64_t r : spot_rows(s.N)) {
    std::vector<double> ref(s.C);
    kiln::ref::rmsnorm_fwd_ref<double>(ref.data(), nullptr,
                                       to_double(download(x, r * s.C, s.C)).data(), gamma.data(), 1,
                                       s.C, kEps);
    if (!close_enough("bench_rmsnorm fwd " + s.str(), ref, download(y, r * s.C, s.C), 2e-2))
      return false;
  }
  return true;
}

bool check_bwd(const RowShape& s, const std::vector<std::vector<float>>& dx0, const bf16* dy,
               const bf16* x, const bf16* g, const float* rstd, const bf16* dx) {
  const auto gamma = to_double(download(g, 0, s.C));
  const auto rows = spot_rows(s.N);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::int64_t r = rows[i];
    auto ref = to_double(dx0[i]);
    std::vector<double> dg(s.C);
    kiln::ref::rmsnorm_bwd_ref<double>(ref.data(), dg.data(),
                                       to_double(download(dy, r * s.C, s.C)).data(),
                                       to_double(download(x, r * s.C, s.C)).data(), gamma.data(),
                                       to_double(download(rstd, r, 1)).data(), 1, s.C);
    if (!close_enough("bench_rmsnorm bwd " + s.str(), ref, download(dx, r * s.C, s.C), 2e-2))
      return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const auto options =
      kiln::bench::parse_options(argc, argv, "kiln RMSNorm forward / backward GB/s (bf16)");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("rmsnorm", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    for (const RowShape& s : row_shapes(options.quick)) {
      const std::size_t n = static_cast<std::size_t>(s.N * s.C);
      Buf<bf16> x(n), y(n), dy(n), dx(n), gamma(s.C), b(n), res(n);
      Buf<float> rstd(s.N), dgamma(s.C);
      kiln::bench::fill_random(x.p, n, DType::bf16, 1, -2.f, 2.f, stream);
      kiln::bench::fill_random(dy.p, n, DType::bf16, 2, -1.f, 1.f, stream);
      kiln::bench::fill_random(dx.p, n, DType::bf16, 3, -1.f, 1.f, stream);
      kiln::bench::fill_random(gamma.p, s.C, DType::bf16, 4, 0.5f, 1.5f, stream);
      kiln::bench::fill_random(dgamma.p, s.C, DType::f32, 5, -1.f, 1.f, stream);
      kiln::bench::fill_random(b.p, n, DType::bf16, 6, -1.f, 1.f, stream);
      const size_t ws_bytes = kiln::rmsnorm_bwd_workspace_size(s.N, s.C);
      Buf<unsigned char> ws(ws_bytes);
      const double row = static_cast<double>(n) * sizeof(bf16);
      const double col = static_cast<double>(s.C) * sizeof(bf16);
      const double stat = static_cast<double>(s.N) * sizeof(float);
      auto add = [&](const char* op, double ms, double bytes) {
        report.add(nlohmann::json{{"op", op},
                                  {"impl", "kiln"},
                                  {"shape", s.str()},
                                  {"N", s.N},
                                  {"C", s.C},
                                  {"dtype", "bf16"},
                                  {"ms", ms},
                                  {"bytes", bytes},
                                  {"gbps", kiln::bench::gbps(bytes, ms)}});
      };
      const std::function<void(cudaStream_t)> fwd = [&](cudaStream_t st) {
        kiln::rmsnorm_fwd(y.p, rstd.p, x.p, gamma.p, s.N, s.C, kEps, KILN_DTYPE_BF16, st);
      };
      fwd(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (check_fwd(s, x.p, gamma.p, y.p)) {
        const auto t = kiln::bench::time_region(fwd, stream, options);
        add("rmsnorm_fwd", t.median_ms, 2 * row + col + stat);
      }
      const std::function<void(cudaStream_t)> fused = [&](cudaStream_t st) {
        kiln::residual_rmsnorm_fwd(res.p, y.p, rstd.p, x.p, b.p, gamma.p, s.N, s.C, kEps,
                                   KILN_DTYPE_BF16, st);
      };
      fused(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      // y is RMSNorm of the residual it stored (whose sum the GPU tests check bitwise).
      if (check_fwd(s, res.p, gamma.p, y.p)) {
        const auto t = kiln::bench::time_region(fused, stream, options);
        add("residual_rmsnorm_fwd", t.median_ms, 4 * row + col + stat);
      }
      fwd(stream);  // the backward reads the statistics of x
      const std::function<void(cudaStream_t)> bwd = [&](cudaStream_t st) {
        kiln::rmsnorm_bwd(dx.p, dgamma.p, dy.p, x.p, gamma.p, rstd.p, s.N, s.C, ws.p, ws_bytes,
                          KILN_DTYPE_BF16, st);
      };
      std::vector<std::vector<float>> dx0;
      for (const std::int64_t r : spot_rows(s.N))
        dx0.push_back(download(dx.p, r * s.C, s.C));
      bwd(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (check_bwd(s, dx0, dy.p, x.p, gamma.p, rstd.p, dx.p)) {
        const auto t = kiln::bench::time_region(bwd, stream, options);
        add("rmsnorm_bwd", t.median_ms, 4 * row + col + stat + 2.0 * s.C * sizeof(float));
      }
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_rmsnorm: %s\n", e.what());
    return 1;
  }
  return kiln::bench::exit_status();
}
