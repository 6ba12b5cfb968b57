// bench_layernorm: LayerNorm forward, fused residual + LayerNorm forward and backward (dx, dgamma,
// dbeta, finalize included) in GB/s and % of the measured copy bandwidth, bf16, over GPT-2 124M
// (N = 8 * 1024 rows of C = 768) and wider hidden sizes. Bytes: every input read once and every
// output written once (PERF.md): fwd 2 N C (x, y) + 2 C (gamma, beta) bf16 + 2 N fp32 (mean,
// rstd); residual fwd 4 N C; bwd 4 N C (dy, x, dx read and written) + C bf16 + 2 N + 4 C fp32
// (dgamma, dbeta read and written). llm.c's published 1.2 TB/s for C = 768 is recorded beside
// (impl "llm.c-published"; not measured here). The PyTorch peer is bench/peers/layernorm.py.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/harness/harness.hpp"
#include "bench/rows_bench.hpp"
#include "kernels/norm/layernorm_ref.hpp"
#include "kiln/layernorm.h"

namespace {

using kiln::bench::DType;
using namespace kiln::bench::rows;

constexpr double kEps = 1e-5;

// The forward of rows {0, N/2, N-1} against the double reference.
bool check_fwd(const RowShape& s, const bf16* x, const bf16* g, const bf16* b, const bf16* y) {
  const auto gamma = to_double(download(g, 0, s.C)), beta = to_double(download(b, 0, s.C));
  for (const std::int64_t r : spot_rows(s.N)) {
    const auto xr = to_double(download(x, r * s.C, s.C));
    std::vector<double> ref(s.C);
    kiln::ref::layernorm_fwd_ref<double>(ref.data(), nullptr, nullptr, xr.data(), gamma.data(),
                                         beta.data(), 1, s.C, kEps);
    if (!close_enough("bench_layernorm fwd " + s.str(), ref, download(y, r * s.C, s.C), 2e-2))
      return false;
  }
  return true;
}

// dx of rows {0, N/2, N-1} after one backward (from dx0, their values before it).
bool check_bwd(const RowShape& s, const std::vector<std::vector<float>>& dx0, const bf16* dy,
               const bf16* x, const bf16* g, const float* mean, const float* rstd, const bf16* dx) {
  const auto gamma = to_double(download(g, 0, s.C));
  const auto rows = spot_rows(s.N);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::int64_t r = rows[i];
    auto ref = to_double(dx0[i]);
    std::vector<double> dg(s.C), db(s.C);
    const auto m = to_double(download(mean, r, 1)), rs = to_double(download(rstd, r, 1));
    kiln::ref::layernorm_bwd_ref<double>(
        ref.data(), dg.data(), db.data(), to_double(download(dy, r * s.C, s.C)).data(),
        to_double(download(x, r * s.C, s.C)).data(), gamma.data(), m.data(), rs.data(), 1, s.C);
    if (!close_enough("bench_layernorm bwd " + s.str(), ref, download(dx, r * s.C, s.C), 2e-2))
      return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const auto options = kiln::bench::parse_options(
      argc, argv, "kiln LayerNorm forward / fused residual forward / backward GB/s (bf16)");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("layernorm", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    for (const RowShape& s : row_shapes(options.quick)) {
      const std::size_t n = static_cast<std::size_t>(s.N * s.C);
      Buf<bf16> x(n), b(n), y(n), res(n), dy(n), dx(n), gamma(s.C), beta(s.C);
      Buf<float> mean(s.N), rstd(s.N), dgamma(s.C), dbeta(s.C);
      kiln::bench::fill_random(x.p, n, DType::bf16, 1, -2.f, 3.f, stream);
      kiln::bench::fill_random(b.p, n, DType::bf16, 2, -1.f, 1.f, stream);
      kiln::bench::fill_random(dy.p, n, DType::bf16, 3, -1.f, 1.f, stream);
      kiln::bench::fill_random(dx.p, n, DType::bf16, 4, -1.f, 1.f, stream);
      kiln::bench::fill_random(gamma.p, s.C, DType::bf16, 5, 0.5f, 1.5f, stream);
      kiln::bench::fill_random(beta.p, s.C, DType::bf16, 6, -0.5f, 0.5f, stream);
      kiln::bench::fill_random(dgamma.p, s.C, DType::f32, 7, -1.f, 1.f, stream);
      kiln::bench::fill_random(dbeta.p, s.C, DType::f32, 8, -1.f, 1.f, stream);
      const size_t ws_bytes = kiln::layernorm_bwd_workspace_size(s.N, s.C);
      Buf<unsigned char> ws(ws_bytes);
      const double row = static_cast<double>(n) * sizeof(bf16);
      const double col = static_cast<double>(s.C) * sizeof(bf16);
      const double stats = 2.0 * s.N * sizeof(float);
      auto add = [&](const char* op, const char* impl, double ms, double bytes) {
        report.add(nlohmann::json{{"op", op},
                                  {"impl", impl},
                                  {"shape", s.str()},
                                  {"N", s.N},
                                  {"C", s.C},
                                  {"dtype", "bf16"},
                                  {"ms", ms},
                                  {"bytes", bytes},
                                  {"gbps", kiln::bench::gbps(bytes, ms)}});
      };

      const std::function<void(cudaStream_t)> fwd = [&](cudaStream_t st) {
        kiln::layernorm_fwd(y.p, mean.p, rstd.p, x.p, gamma.p, beta.p, s.N, s.C, kEps,
                            KILN_DTYPE_BF16, st);
      };
      fwd(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (check_fwd(s, x.p, gamma.p, beta.p, y.p)) {
        const auto t = kiln::bench::time_region(fwd, stream, options);
        add("layernorm_fwd", "kiln", t.median_ms, 2 * row + 2 * col + stats);
      }
      if (s.N == 8192 && s.C == 768) {
        // llm.c's published figure for its fastest LayerNorm forward at this shape, for scale.
        report.add(nlohmann::json{{"op", "layernorm_fwd"},
                                  {"impl", "llm.c-published"},
                                  {"shape", s.str()},
                                  {"N", s.N},
                                  {"C", s.C},
                                  {"dtype", "bf16"},
                                  {"gbps", 1200.0},
                                  {"measured", false}});
      }

      const std::function<void(cudaStream_t)> fused = [&](cudaStream_t st) {
        kiln::residual_layernorm_fwd(res.p, y.p, mean.p, rstd.p, x.p, b.p, gamma.p, beta.p, s.N,
                                     s.C, kEps, KILN_DTYPE_BF16, st);
      };
      fused(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      // y is LayerNorm of the residual it stored (whose sum the GPU tests check bitwise).
      if (check_fwd(s, res.p, gamma.p, beta.p, y.p)) {
        const auto tf = kiln::bench::time_region(fused, stream, options);
        add("residual_layernorm_fwd", "kiln", tf.median_ms, 4 * row + 2 * col + stats);
      }

      // The backward reads the forward's statistics of x.
      fwd(stream);
      const std::function<void(cudaStream_t)> bwd = [&](cudaStream_t st) {
        kiln::layernorm_bwd(dx.p, dgamma.p, dbeta.p, dy.p, x.p, gamma.p, mean.p, rstd.p, s.N, s.C,
                            ws.p, ws_bytes, KILN_DTYPE_BF16, st);
      };
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      std::vector<std::vector<float>> dx0;
      for (const std::int64_t r : spot_rows(s.N))
        dx0.push_back(download(dx.p, r * s.C, s.C));
      bwd(stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (check_bwd(s, dx0, dy.p, x.p, gamma.p, mean.p, rstd.p, dx.p)) {
        const auto tb = kiln::bench::time_region(bwd, stream, options);
        add("layernorm_bwd", "kiln", tb.median_ms,
            4 * row + col + stats + 4.0 * s.C * sizeof(float));
      }
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_layernorm: %s\n", e.what());
    return 1;
  }
  return kiln::bench::exit_status();
}
