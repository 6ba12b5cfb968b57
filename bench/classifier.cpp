// bench_classifier: the fused classifier (softmax + cross-entropy + dlogits, in place) in GB/s
// and % of copy bandwidth (PERF.md target: >= 85% at V = 50304). Bytes are the minimum the op can
// move: each logit read once and each gradient written once (2 + 2 bytes an element of bf16),
// plus the targets and losses (8 bytes a row); the kernel moves exactly that when a row fits in
// shared memory. Also the deterministic mean-loss kernel. The PyTorch peer (F.cross_entropy
// forward + backward) is bench/peers/classifier.py, same shapes and byte count.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "errors/check.hpp"
#include "kiln/classifier.h"

namespace {

using bf16 = __nv_bfloat16;
using kiln::bench::Buf;
using kiln::bench::DType;

struct Case {
  int64_t N, V, Vp;
  std::string shape() const {
    return "N=" + std::to_string(N) + " V=" + std::to_string(V) + " Vp=" + std::to_string(Vp);
  }
};

std::vector<double> download_row(const bf16* p, int64_t n) {
  std::vector<bf16> h(n);
  KILN_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<double> d(n);
  for (int64_t i = 0; i < n; ++i)
    d[i] = __bfloat162float(h[i]);
  return d;
}

// Spot check of a few rows against a double computation (the GPU tests do the full comparison):
// a broken kernel is reported and not timed. Runs the op once, in place.
bool spot_check(const Case& c, bf16* logits, const int32_t* d_targets,
                const std::vector<int32_t>& targets, float* losses, float dloss,
                cudaStream_t stream) {
  const std::vector<int64_t> rows{0, c.N / 2, c.N - 1};
  std::vector<std::vector<double>> x;
  for (int64_t r : rows)
    x.push_back(download_row(logits + r * c.Vp, c.Vp));
  kiln::classifier_fwd_bwd(losses, logits, logits, d_targets, c.N, c.V, c.Vp, dloss, -100, stream);
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  double worst = 0;
  for (size_t k = 0; k < rows.size(); ++k) {
    const int64_t r = rows[k];
    const auto g = download_row(logits + r * c.Vp, c.Vp);
    float loss = 0;
    KILN_CUDA_CHECK(cudaMemcpy(&loss, losses + r, 4, cudaMemcpyDeviceToHost));
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < c.V; ++j)
      m = std::max(m, x[k][j]);
    for (int64_t j = 0; j < c.V; ++j)
      s += std::exp(x[k][j] - m);
    const int32_t t = targets[r];
    worst = std::max(worst, std::fabs(m + std::log(s) - x[k][t] - loss));
    for (int64_t j = 0; j < c.Vp; ++j) {
      const double want = j < c.V ? (std::exp(x[k][j] - m) / s - (j == t)) * dloss : 0.0;
      worst = std::max(worst, std::fabs(want - g[j]) / dloss);
    }
  }
  if (!(worst < 1e-2)) {
    std::fprintf(stderr, "bench_classifier: %s: off by %g at a spot check; not timed\n",
                 c.shape().c_str(), worst);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const auto options = kiln::bench::parse_options(
      argc, argv, "kiln fused classifier (softmax + cross-entropy + dlogits in place), GB/s");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("classifier", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    // GPT-2 (padded and not), a multiple of 8 without padding, Llama 2 and Llama 3 vocabularies;
    // N = 8 x 1024 tokens (16 x 1024 for the smaller vocabularies).
    std::vector<Case> cases{{8192, 50257, 50304},
                            {8192, 50304, 50304},
                            {8192, 50257, 50257},
                            {16384, 32000, 32000},
                            {8192, 128256, 128256}};
    if (options.quick) cases.resize(1);
    int failures = 0;
    for (const Case& c : cases) {
      Buf<bf16> logits(static_cast<size_t>(c.N * c.Vp));
      Buf<float> losses(c.N), mean(1);
      Buf<int32_t> d_targets(c.N);
      std::mt19937 rng(7);
      std::uniform_int_distribution<int32_t> cls(0, static_cast<int32_t>(c.V - 1));
      std::vector<int32_t> targets(c.N);
      for (auto& t : targets)
        t = cls(rng);
      KILN_CUDA_CHECK(cudaMemcpy(d_targets.p, targets.data(), c.N * 4, cudaMemcpyHostToDevice));
      kiln::bench::fill_random(logits.p, c.N * c.Vp, DType::bf16, 11, -6.0f, 6.0f, stream);
      const float dloss = 1.0f / static_cast<float>(c.N);
      if (!spot_check(c, logits.p, d_targets.p, targets, losses.p, dloss, stream)) {
        ++failures;
        continue;
      }
      // The op runs in place, so each repetition works on the previous one's gradients: fresh
      // random logits first (the arithmetic does not depend on the values).
      kiln::bench::fill_random(logits.p, c.N * c.Vp, DType::bf16, 12, -6.0f, 6.0f, stream);
      const auto t = kiln::bench::time_region(
          [&](cudaStream_t s) {
            kiln::classifier_fwd_bwd(losses.p, logits.p, logits.p, d_targets.p, c.N, c.V, c.Vp,
                                     dloss, -100, s);
          },
          stream, options);
      const double bytes = 2.0 * c.N * c.V + 2.0 * c.N * c.Vp + 8.0 * c.N;
      report.add({{"op", "classifier_fwd_bwd"},
                  {"impl", "kiln"},
                  {"shape", c.shape()},
                  {"N", c.N},
                  {"V", c.V},
                  {"Vp", c.Vp},
                  {"bytes", bytes},
                  {"ms", t.median_ms},
                  {"gbps", kiln::bench::gbps(bytes, t.median_ms)}});

      const auto tm = kiln::bench::time_region(
          [&](cudaStream_t s) {
            kiln::classifier_mean_loss(mean.p, losses.p, d_targets.p, c.N, -100, s);
          },
          stream, options);
      report.add({{"op", "classifier_mean_loss"},
                  {"impl", "kiln"},
                  {"shape", "N=" + std::to_string(c.N)},
                  {"ms", tm.median_ms},
                  {"gbps", kiln::bench::gbps(8.0 * c.N, tm.median_ms)}});
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
    return failures ? 1 : kiln::bench::exit_status();
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_classifier: %s\n", e.what());
    return 1;
  }
}
