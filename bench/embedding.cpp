// bench_embedding: token + position embedding forward and backward in GB/s and % of copy
// bandwidth. Bytes (PERF.md: each input read once, each output written once):
//   forward:  tokens (4 M) + the gathered wte rows (2 M C) + wpe rows 0..T-1 (2 T C) + out (2 M C)
//   backward: tokens (4 M) + dout (2 M C) + dwte rows of the distinct ids, read and written
//             (8 U C) + dwpe rows 0..T-1, read and written (8 T C)
// with M = B T tokens and U distinct ids. The backward also sorts the ids (CUB radix sort) to
// stay deterministic; its time is included. The PyTorch peer is bench/peers/embedding.py.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "errors/check.hpp"
#include "kiln/embedding.h"

namespace {

using bf16 = __nv_bfloat16;
using kiln::bench::Buf;
using kiln::bench::DType;

struct Case {
  int64_t B, T, C, V;
  std::string shape() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " C=" + std::to_string(C) +
           " V=" + std::to_string(V);
  }
};

template <typename T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> h(n);
  KILN_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

double f(bf16 x) {
  return __bfloat162float(x);
}

}  // namespace

int main(int argc, char** argv) {
  const auto options =
      kiln::bench::parse_options(argc, argv, "kiln token + position embedding fwd/bwd, GB/s");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("embedding", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    // GPT-2 small (a micro-batch of 8 and of 32 sequences) and GPT-2 XL's width.
    std::vector<Case> cases{{8, 1024, 768, 50257}, {32, 1024, 768, 50257}, {16, 1024, 1600, 50257}};
    if (options.quick) cases.resize(1);
    int failures = 0;
    for (const Case& c : cases) {
      const int64_t M = c.B * c.T, maxT = c.T;
      Buf<bf16> wte(c.V * c.C), wpe(maxT * c.C), out(M * c.C), dout(M * c.C);
      Buf<float> dwte(c.V * c.C), dwpe(maxT * c.C);
      Buf<int32_t> tokens(M);
      kiln::bench::fill_random(wte.p, c.V * c.C, DType::bf16, 21, -1, 1, stream);
      kiln::bench::fill_random(wpe.p, maxT * c.C, DType::bf16, 22, -1, 1, stream);
      kiln::bench::fill_random(dout.p, M * c.C, DType::bf16, 23, -1, 1, stream);
      kiln::bench::fill_random(dwte.p, c.V * c.C, DType::f32, 24, -1, 1, stream);
      kiln::bench::fill_random(dwpe.p, maxT * c.C, DType::f32, 25, -1, 1, stream);
      // Zipf-like ids, as text has: a few ids very frequent, most rare.
      std::mt19937 rng(5);
      std::uniform_real_distribution<double> u(0.0, 1.0);
      std::vector<int32_t> ids(M);
      std::set<int32_t> distinct;
      for (auto& id : ids) {
        id = static_cast<int32_t>(std::pow(double(c.V), u(rng))) - 1;
        distinct.insert(id);
      }
      KILN_CUDA_CHECK(cudaMemcpy(tokens.p, ids.data(), M * 4, cudaMemcpyHostToDevice));
      const size_t ws_bytes = kiln::embedding_bwd_workspace_size(c.B, c.T, c.V);
      Buf<unsigned char> ws(ws_bytes);

      // Spot checks: forward rows at both ends; one channel of dwpe accumulates the batch.
      kiln::embedding_fwd(out.p, tokens.p, wte.p, wpe.p, c.B, c.T, c.C, c.V, maxT, stream);
      const auto h_out = download(out.p, M * c.C);
      const auto h_wte = download(wte.p, c.V * c.C), h_wpe = download(wpe.p, maxT * c.C);
      double worst = 0;
      for (const int64_t i : {int64_t{0}, M - 1}) {
        for (int64_t ch = 0; ch < c.C; ++ch) {
          const double want = f(h_wte[ids[i] * c.C + ch]) + f(h_wpe[(i % c.T) * c.C + ch]);
          worst = std::max(worst, std::fabs(want - f(h_out[i * c.C + ch])));
        }
      }
      const auto dwpe0 = download(dwpe.p, maxT * c.C);
      kiln::embedding_bwd(dwte.p, dwpe.p, dout.p, tokens.p, c.B, c.T, c.C, c.V, maxT, ws.p,
                          ws_bytes, stream);
      const auto dwpe1 = download(dwpe.p, maxT * c.C);
      const auto h_dout = download(dout.p, M * c.C);
      double sum = 0;
      for (int64_t b = 0; b < c.B; ++b)
        sum += f(h_dout[(b * c.T + 3) * c.C]);
      worst = std::max(worst, std::fabs(dwpe1[3 * c.C] - dwpe0[3 * c.C] - sum) / c.B);
      if (!(worst < 2e-2)) {
        std::fprintf(stderr, "bench_embedding: %s: off by %g at a spot check; not timed\n",
                     c.shape().c_str(), worst);
        ++failures;
        continue;
      }

      const auto tf = kiln::bench::time_region(
          [&](cudaStream_t s) {
            kiln::embedding_fwd(out.p, tokens.p, wte.p, wpe.p, c.B, c.T, c.C, c.V, maxT, s);
          },
          stream, options);
      const double fwd_bytes = 4.0 * M + 2.0 * M * c.C + 2.0 * c.T * c.C + 2.0 * M * c.C;
      report.add({{"op", "embedding_fwd"},
                  {"impl", "kiln"},
                  {"shape", c.shape()},
                  {"bytes", fwd_bytes},
                  {"ms", tf.median_ms},
                  {"gbps", kiln::bench::gbps(fwd_bytes, tf.median_ms)}});

      const auto tb = kiln::bench::time_region(
          [&](cudaStream_t s) {
            kiln::embedding_bwd(dwte.p, dwpe.p, dout.p, tokens.p, c.B, c.T, c.C, c.V, maxT, ws.p,
                                ws_bytes, s);
          },
          stream, options);
      const double bwd_bytes =
          4.0 * M + 2.0 * M * c.C + 8.0 * double(distinct.size()) * c.C + 8.0 * c.T * c.C;
      report.add({{"op", "embedding_bwd"},
                  {"impl", "kiln"},
                  {"shape", c.shape()},
                  {"distinct_ids", distinct.size()},
                  {"bytes", bwd_bytes},
                  {"ms", tb.median_ms},
                  {"gbps", kiln::bench::gbps(bwd_bytes, tb.median_ms)}});
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
    return failures ? 1 : kiln::bench::exit_status();
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_embedding: %s\n", e.what());
    return 1;
  }
}
