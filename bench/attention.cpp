// bench_attention: attention forward and backward TFLOP/s with FlashAttention's conventions
// (PERF.md): 16k tokens in total, hidden 2048 (NH = 2048 / HD, B = 16384 / T), T from 512 to 16k,
// HD 64 and 128, causal and not; FLOPs 4 B NH T^2 HD for the forward (halved when causal), 2.5x
// that for the backward. Every kiln path this device serves is timed side by side (forced), each
// after a spot check of its output against the double reference (forward: O; backward: dQ), the
// backward in both modes (atomic dQ and deterministic). cuDNN's fused flash attention,
// reached through kiln's own cuDNN backend (impl "cudnn"), is the peer measured in the same run;
// HD 256 rows are cuDNN only (kiln's kernels take 64 and 128). The PyTorch peers (SDPA's flash
// and cuDNN backends) are bench/peers/attention.py, with the same shapes and JSON schema.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "errors/check.hpp"
#include "kernels/attention/attention_ref.hpp"
#include "kiln/attention.h"

namespace {

using bf16 = __nv_bfloat16;
using kiln::bench::Buf;
using kiln::bench::DType;

struct Case {
  int64_t B, T, NH, HD;
  bool causal;
  std::string shape() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " NH=" + std::to_string(NH) +
           " HD=" + std::to_string(HD) + (causal ? " causal" : "");
  }
  double fwd_flops() const {
    const double f = 4.0 * B * NH * static_cast<double>(T) * T * HD;
    return causal ? f / 2 : f;
  }
};

std::vector<float> download_bf16(const bf16* p, size_t n) {
  std::vector<bf16> h(n);
  KILN_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i)
    f[i] = __bfloat162float(h[i]);
  return f;
}

// Spot check of O for (b = 0, h = 0) at a few rows against the double reference: catches a broken
// path before it is timed (the GPU tests do the full comparison).
bool spot_check(const Case& c, const bf16* q, const bf16* k, const bf16* v, const bf16* o) {
  const size_t n = static_cast<size_t>(c.T * c.NH * c.HD);  // batch 0
  const auto hq = download_bf16(q, n), hk = download_bf16(k, n), hv = download_bf16(v, n),
             ho = download_bf16(o, n);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.HD));
  double worst = 0;
  for (const int64_t i : {int64_t{0}, c.T / 3, c.T - 1}) {
    const int64_t last = kiln::ref::attention_last_key(i, c.T, c.T, c.causal);
    std::vector<double> s(static_cast<size_t>(last + 1));
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j <= last; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < c.HD; ++d)
        dot += static_cast<double>(hq[i * c.NH * c.HD + d]) * hk[j * c.NH * c.HD + d];
      s[j] = dot * scale;
      mx = std::max(mx, s[j]);
    }
    for (auto& x : s) {
      x = std::exp(x - mx);
      sum += x;
    }
    for (int64_t d = 0; d < c.HD; ++d) {
      double acc = 0;
      for (int64_t j = 0; j <= last; ++j)
        acc += s[j] * hv[j * c.NH * c.HD + d];
      worst = std::max(worst, std::fabs(acc / sum - ho[i * c.NH * c.HD + d]));
    }
  }
  if (!(worst < 2e-2)) {
    kiln::bench::check_failed("bench_attention " + c.shape() + ": output off by " +
                              std::to_string(worst) + " at a spot check");
    return false;
  }
  return true;
}

// Spot check of dQ for (b = 0, h = 0) at a few rows against the double reference, D from the O
// the backward was given (the kernels' definition).
bool spot_check_dq(const Case& c, const bf16* q, const bf16* k, const bf16* v, const bf16* o,
                   const bf16* dout, const bf16* dq, const std::string& what) {
  const size_t n = static_cast<size_t>(c.T * c.NH * c.HD);  // batch 0
  const auto hq = download_bf16(q, n), hk = download_bf16(k, n), hv = download_bf16(v, n),
             ho = download_bf16(o, n), hdo = download_bf16(dout, n), hdq = download_bf16(dq, n);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.HD));
  const int64_t row = c.NH * c.HD;  // elements from one token to the next
  double worst = 0, peak = 0;
  for (const int64_t i : {int64_t{0}, c.T / 3, c.T - 1}) {
    const int64_t last = kiln::ref::attention_last_key(i, c.T, c.T, c.causal);
    std::vector<double> p(static_cast<size_t>(last + 1));
    double mx = -INFINITY, sum = 0, D = 0;
    for (int64_t j = 0; j <= last; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < c.HD; ++d)
        dot += static_cast<double>(hq[i * row + d]) * hk[j * row + d];
      p[j] = dot * scale;
      mx = std::max(mx, p[j]);
    }
    for (auto& x : p) {
      x = std::exp(x - mx);
      sum += x;
    }
    for (int64_t d = 0; d < c.HD; ++d)
      D += static_cast<double>(hdo[i * row + d]) * ho[i * row + d];
    std::vector<double> acc(static_cast<size_t>(c.HD), 0.0);
    for (int64_t j = 0; j <= last; ++j) {
      double dp = 0;
      for (int64_t d = 0; d < c.HD; ++d)
        dp += static_cast<double>(hdo[i * row + d]) * hv[j * row + d];
      const double ds = p[j] / sum * (dp - D);
      for (int64_t d = 0; d < c.HD; ++d)
        acc[d] += ds * hk[j * row + d];
    }
    for (int64_t d = 0; d < c.HD; ++d) {
      peak = std::max(peak, std::fabs(acc[d] * scale));
      worst = std::max(worst, std::fabs(acc[d] * scale - hdq[i * row + d]));
    }
  }
  if (!(worst <= 2e-2 * (1.0 + peak))) {
    kiln::bench::check_failed("bench_attention " + what + " " + c.shape() + ": dQ off by " +
                              std::to_string(worst) + " (peak " + std::to_string(peak) +
                              ") at a spot check");
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const auto options = kiln::bench::parse_options(
      argc, argv,
      "kiln attention forward/backward TFLOP/s, every kiln path (FlashAttention shapes)");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("attention", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    std::vector<Case> cases;
    const std::vector<int64_t> lengths =
        options.quick ? std::vector<int64_t>{1024, 4096}
                      : std::vector<int64_t>{512, 1024, 2048, 4096, 8192, 16384};
    // HD 256 is served by cuDNN only (AUTO's fallback): its rows show what that fallback costs.
    for (const int64_t hd : {int64_t{64}, int64_t{128}, int64_t{256}})
      for (const bool causal : {false, true})
        for (const int64_t t : lengths)
          cases.push_back({16384 / t, t, 2048 / hd, hd, causal});

    for (const Case& c : cases) {
      const size_t n = static_cast<size_t>(c.B * c.T * c.NH * c.HD);
      Buf<bf16> q(n), k(n), v(n), o(n), dout(n), dq(n), dk(n), dv(n);
      Buf<float> lse(static_cast<size_t>(c.B * c.NH * c.T));
      kiln::bench::fill_random(q.p, n, DType::bf16, 1, -1.f, 1.f, stream);
      kiln::bench::fill_random(k.p, n, DType::bf16, 2, -1.f, 1.f, stream);
      kiln::bench::fill_random(v.p, n, DType::bf16, 3, -1.f, 1.f, stream);
      kiln::bench::fill_random(dout.p, n, DType::bf16, 4, -1.f, 1.f, stream);
      for (const auto impl :
           {KILN_ATTENTION_IMPL_SM90, KILN_ATTENTION_IMPL_SM80, KILN_ATTENTION_IMPL_CUDNN}) {
        kiln_attention_desc_t d;
        kiln::check(kiln_attention_desc_init(&d, c.B, c.T, c.T, c.NH, c.NH, c.HD, c.causal));
        d.impl = impl;
        const std::string impl_name =
            std::string(impl == KILN_ATTENTION_IMPL_CUDNN ? "" : "kiln-") +
            kiln_attention_impl_name(impl);
        // The backward in both dQ modes (cuDNN: its default and its deterministic algorithm).
        for (const int mode : {0, 1, 2}) {
          const bool backward = mode > 0;
          d.deterministic = mode == 2 ? 1 : 0;
          kiln_attention_impl_t resolved;
          if (kiln_attention_resolve_impl(&d, backward ? 1 : 0, &resolved) != KILN_STATUS_OK)
            continue;  // this device or build does not serve the path
          size_t ws_bytes = backward ? kiln::attention_bwd_workspace_size(d)
                                     : kiln::attention_fwd_workspace_size(d);
          Buf<unsigned char> ws(ws_bytes);
          const std::function<void(cudaStream_t)> fwd = [&](cudaStream_t s) {
            kiln::attention_fwd(d, o.p, lse.p, q.p, k.p, v.p, ws.p, ws_bytes, s);
          };
          const std::function<void(cudaStream_t)> bwd = [&](cudaStream_t s) {
            kiln::attention_bwd(d, dq.p, dk.p, dv.p, dout.p, q.p, k.p, v.p, o.p, lse.p, ws.p,
                                ws_bytes, s);
          };
          if (!backward) {
            fwd(stream);
            KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
            if (!spot_check(c, q.p, k.p, v.p, o.p)) continue;
          } else {
            // O and LSE from the default forward path, as a trainer would have them.
            kiln_attention_desc_t fd = d;
            fd.impl = KILN_ATTENTION_IMPL_AUTO;
            fd.deterministic = 0;
            const size_t fws_bytes = kiln::attention_fwd_workspace_size(fd);
            Buf<unsigned char> fws(fws_bytes);
            kiln::attention_fwd(fd, o.p, lse.p, q.p, k.p, v.p, fws.p, fws_bytes, stream);
            bwd(stream);
            KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
            if (!spot_check_dq(c, q.p, k.p, v.p, o.p, dout.p, dq.p, impl_name)) continue;
          }
          const auto t = kiln::bench::time_region(backward ? bwd : fwd, stream, options);
          const double flops = c.fwd_flops() * (backward ? 2.5 : 1.0);
          report.add(nlohmann::json{{"op", backward ? "attention_bwd" : "attention_fwd"},
                                    {"impl", impl_name + (mode == 2 ? "-deterministic" : "")},
                                    {"shape", c.shape()},
                                    {"B", c.B},
                                    {"T", c.T},
                                    {"NH", c.NH},
                                    {"HD", c.HD},
                                    {"causal", c.causal},
                                    {"ms", t.median_ms},
                                    {"tflops", kiln::bench::tflops(flops, t.median_ms)}});
        }
      }
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  return kiln::bench::exit_status();
}
