// bench_adamw: the fused multi-tensor AdamW step and the global gradient norm over GPT-2 124M's
// parameter list (148 tensors, 124.5M elements with the vocabulary padded to 50304), in GB/s and %
// of copy bandwidth (PERF.md target for AdamW: >= 85%). Bytes per element (each input read once,
// each output written once):
//   AdamW: master, m, v read and written (24) + grad read (4) + bf16 copy written (2) = 30
//   global norm: grad read (4)
// Also the two together, as a training step runs them (clip scale read on the device). The
// PyTorch peer (torch.optim.AdamW(fused=True), clip_grad_norm_) is bench/peers/adamw.py.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "errors/check.hpp"
#include "kiln/optimizer.h"

namespace {

using kiln::bench::DType;

struct Param {
  int64_t n;
  bool decay;  // matrices decay; biases and LayerNorm parameters do not (nanoGPT's choice)
};

// wte, wpe; per layer ln1 (w, b), qkv (w, b), attention projection (w, b), ln2 (w, b), MLP fc
// (w, b), MLP projection (w, b); the final LayerNorm (w, b).
std::vector<Param> gpt2_124m() {
  const int64_t C = 768, V = 50304, T = 1024, L = 12;
  std::vector<Param> p{{V * C, true}, {T * C, true}};
  for (int64_t l = 0; l < L; ++l) {
    const std::vector<Param> layer{
        {C, false}, {C, false}, {3 * C * C, true}, {3 * C, false}, {C * C, true},     {C, false},
        {C, false}, {C, false}, {4 * C * C, true}, {4 * C, false}, {4 * C * C, true}, {C, false}};
    p.insert(p.end(), layer.begin(), layer.end());
  }
  p.push_back({C, false});
  p.push_back({C, false});
  return p;
}

// One allocation per kind of state, the tensors packed at 16-byte boundaries (as a memory plan
// would), so the copy of a whole kind is one buffer.
struct Arena {
  void* p = nullptr;
  explicit Arena(size_t bytes) { KILN_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~Arena() { cudaFree(p); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
};

}  // namespace

int main(int argc, char** argv) {
  const auto options = kiln::bench::parse_options(
      argc, argv, "kiln fused AdamW and global gradient norm over GPT-2 124M's parameters, GB/s");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("adamw", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    const auto params = gpt2_124m();
    std::vector<int64_t> offset;
    int64_t total = 0;
    for (const auto& q : params) {
      offset.push_back(total);
      total += (q.n + 3) / 4 * 4;  // 16-byte aligned starts (in floats)
    }
    Arena master(total * 4), m(total * 4), v(total * 4), grad(total * 4), param(total * 2);
    auto* fm = static_cast<float*>(master.p);
    auto* fmo = static_cast<float*>(m.p);
    auto* fv = static_cast<float*>(v.p);
    auto* fg = static_cast<float*>(grad.p);
    auto* bp = static_cast<__nv_bfloat16*>(param.p);
    kiln::bench::fill_random(fm, total, DType::f32, 31, -0.1f, 0.1f, stream);
    kiln::bench::fill_random(fmo, total, DType::f32, 32, -1e-3f, 1e-3f, stream);
    kiln::bench::fill_random(fv, total, DType::f32, 33, 1e-8f, 1e-6f, stream);
    kiln::bench::fill_random(fg, total, DType::f32, 34, -1e-2f, 1e-2f, stream);

    std::vector<kiln_adamw_tensor_t> host;
    std::vector<kiln_norm_tensor_t> norm_host;
    int64_t elements = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      kiln_adamw_tensor_t t{};
      t.master = fm + offset[i];
      t.m = fmo + offset[i];
      t.v = fv + offset[i];
      t.grad = fg + offset[i];
      t.param = bp + offset[i];
      t.n = params[i].n;
      t.decay = params[i].decay;
      host.push_back(t);
      norm_host.push_back({fg + offset[i], params[i].n, 0});
      elements += params[i].n;
    }
    const int count = static_cast<int>(host.size());
    const int64_t chunks = kiln::adamw_prepare(host.data(), count);
    const int64_t norm_chunks = kiln::global_norm_prepare(norm_host.data(), count);
    kiln_adamw_tensor_t* table = nullptr;
    kiln_norm_tensor_t* norm_table = nullptr;
    KILN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&table), count * sizeof(*table)));
    KILN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&norm_table), count * sizeof(*norm_table)));
    KILN_CUDA_CHECK(cudaMemcpy(table, host.data(), count * sizeof(*table), cudaMemcpyHostToDevice));
    KILN_CUDA_CHECK(cudaMemcpy(norm_table, norm_host.data(), count * sizeof(*norm_table),
                               cudaMemcpyHostToDevice));
    const size_t ws_bytes = kiln::global_norm_workspace_size(norm_chunks);
    Arena ws(ws_bytes), out(256);
    auto* norm_out = static_cast<float*>(out.p);

    // Spot check: the norm of the gradients against a host sum, and one AdamW element.
    std::vector<float> g(total), p0(8), p1(8), m0(8), v0(8);
    KILN_CUDA_CHECK(cudaMemcpy(g.data(), fg, total * 4, cudaMemcpyDeviceToHost));
    double sum = 0;
    for (size_t i = 0; i < params.size(); ++i)
      for (int64_t k = 0; k < params[i].n; ++k)
        sum += double(g[offset[i] + k]) * g[offset[i] + k];
    kiln::global_norm(norm_out, norm_table, count, norm_chunks, 1.0f, ws.p, ws_bytes, stream);
    float got[2];
    KILN_CUDA_CHECK(cudaMemcpy(got, norm_out, 8, cudaMemcpyDeviceToHost));
    const int64_t probe = offset[4];  // h0.attn.qkv.w: decays
    KILN_CUDA_CHECK(cudaMemcpy(p0.data(), fm + probe, 32, cudaMemcpyDeviceToHost));
    KILN_CUDA_CHECK(cudaMemcpy(m0.data(), fmo + probe, 32, cudaMemcpyDeviceToHost));
    KILN_CUDA_CHECK(cudaMemcpy(v0.data(), fv + probe, 32, cudaMemcpyDeviceToHost));
    kiln_adamw_config_t cfg{};
    cfg.lr = 6e-4f;
    cfg.beta1 = 0.9f;
    cfg.beta2 = 0.95f;
    cfg.eps = 1e-8f;
    cfg.weight_decay = 0.1f;
    cfg.step = 10;
    kiln::adamw_step(table, count, chunks, cfg, nullptr, stream);
    KILN_CUDA_CHECK(cudaMemcpy(p1.data(), fm + probe, 32, cudaMemcpyDeviceToHost));
    double worst = std::fabs(std::sqrt(sum) - got[0]) / std::sqrt(sum);
    for (int k = 0; k < 8; ++k) {
      const double gk = g[probe + k];
      const double mk = 0.9 * m0[k] + 0.1 * gk, vk = 0.95 * v0[k] + 0.05 * gk * gk;
      const double mh = mk / (1 - std::pow(0.9, 10)), vh = vk / (1 - std::pow(0.95, 10));
      const double want = p0[k] - 6e-4 * (mh / (std::sqrt(vh) + 1e-8) + 0.1 * p0[k]);
      worst = std::max(worst, std::fabs(want - p1[k]) / 6e-4);
    }
    if (!(worst < 1e-3)) {
      kiln::bench::check_failed("bench_adamw: off by " + std::to_string(worst) +
                                " at a spot check");
      return 1;
    }

    const std::string shape =
        "GPT-2 124M (" + std::to_string(count) + " tensors, " + std::to_string(elements) + ")";
    const auto ta = kiln::bench::time_region(
        [&](cudaStream_t s) { kiln::adamw_step(table, count, chunks, cfg, norm_out + 1, s); },
        stream, options);
    report.add({{"op", "adamw"},
                {"impl", "kiln"},
                {"shape", shape},
                {"elements", elements},
                {"bytes", 30.0 * elements},
                {"ms", ta.median_ms},
                {"gbps", kiln::bench::gbps(30.0 * elements, ta.median_ms)}});
    const auto tn = kiln::bench::time_region(
        [&](cudaStream_t s) {
          kiln::global_norm(norm_out, norm_table, count, norm_chunks, 1.0f, ws.p, ws_bytes, s);
        },
        stream, options);
    report.add({{"op", "global_norm"},
                {"impl", "kiln"},
                {"shape", shape},
                {"elements", elements},
                {"bytes", 4.0 * elements},
                {"ms", tn.median_ms},
                {"gbps", kiln::bench::gbps(4.0 * elements, tn.median_ms)}});
    const auto tb = kiln::bench::time_region(
        [&](cudaStream_t s) {
          kiln::global_norm(norm_out, norm_table, count, norm_chunks, 1.0f, ws.p, ws_bytes, s);
          kiln::adamw_step(table, count, chunks, cfg, norm_out + 1, s);
        },
        stream, options);
    report.add({{"op", "global_norm+adamw"},
                {"impl", "kiln"},
                {"shape", shape},
                {"elements", elements},
                {"bytes", 34.0 * elements},
                {"ms", tb.median_ms},
                {"gbps", kiln::bench::gbps(34.0 * elements, tb.median_ms)}});
    KILN_CUDA_CHECK(cudaFree(table));
    KILN_CUDA_CHECK(cudaFree(norm_table));
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
    return 0;
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_adamw: %s\n", e.what());
    return 1;
  }
}
