// bench_rope: rotary embedding forward and backward in GB/s and % of the measured copy bandwidth,
// bf16, in place on Q and K of the packed QKV tensor the fused QKV GEMM writes (V untouched), at
// Llama sizes: Llama-3.2-1B (NH 32, NKV 8, HD 64, Llama 3 scaling 32) and Llama-3.1-8B (NH 32,
// NKV 8, HD 128, scaling 8), B * T = 4 * 2048 tokens, and one decoding step of 64 sequences.
// Bytes: Q and K read and written once, 2 * B * T * (NH + NKV) * HD * 2. Each timed call rotates
// the result of the previous one (a rotation keeps the values bounded). The PyTorch peer is
// bench/peers/rope.py.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "bench/rows_bench.hpp"
#include "kernels/rope/rope_ref.hpp"
#include "kiln/rope.h"

namespace {

using kiln::bench::DType;
using namespace kiln::bench::rows;

struct RopeShape {
  const char* model;
  std::int64_t B, T, NH, NKV, HD, pos_offset;
  double factor;  // Llama 3 scaling factor
  std::string str() const {
    return std::string(model) + " B=" + std::to_string(B) + " T=" + std::to_string(T) +
           (pos_offset ? " pos=" + std::to_string(pos_offset) : "");
  }
};

kiln_rope_config_t config_of(const RopeShape& s) {
  kiln_rope_config_t c{};
  c.head_dim = s.HD;
  c.theta = 500000;
  c.scaling = KILN_ROPE_SCALING_LLAMA3;
  c.factor = s.factor;
  c.low_freq_factor = 1;
  c.high_freq_factor = 4;
  c.original_max_position = 8192;
  return c;
}

// The first, middle and last tokens of batch 0, rotated by one call, against the reference on
// their values before it.
bool check(const char* what, const RopeShape& s, const kiln_rope_config_t& config, bf16* qkv,
           bool backward, cudaStream_t stream) {
  const std::int64_t st = (s.NH + 2 * s.NKV) * s.HD, sb = s.T * st, H = s.NH + s.NKV;
  std::vector<std::vector<float>> before;
  for (const std::int64_t t : spot_rows(s.T))
    before.push_back(download(qkv, t * st, st));
  if (backward) {
    kiln::rope_bwd(qkv, s.B, s.T, H, sb, st, s.pos_offset, config, KILN_DTYPE_BF16, stream);
  } else {
    kiln::rope_fwd(qkv, s.B, s.T, H, sb, st, s.pos_offset, config, KILN_DTYPE_BF16, stream);
  }
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::size_t k = 0;
  for (const std::int64_t t : spot_rows(s.T)) {
    auto ref = to_double(before[k++]);
    if (backward) {
      kiln::ref::rope_bwd_ref<double>(ref.data(), 1, 1, H, st, st, s.pos_offset + t, config);
    } else {
      kiln::ref::rope_fwd_ref<double>(ref.data(), 1, 1, H, st, st, s.pos_offset + t, config);
    }
    if (!close_enough(std::string("bench_rope ") + what, ref, download(qkv, t * st, st), 2e-2))
      return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const auto options = kiln::bench::parse_options(
      argc, argv, "kiln rotary embedding forward / backward GB/s (bf16, packed QKV, in place)");
  if (const int rc = kiln::bench::device_or_skip()) return rc;
  try {
    cudaStream_t stream;
    KILN_CUDA_CHECK(cudaStreamCreate(&stream));
    kiln::bench::Report report("rope", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    std::vector<RopeShape> shapes = {{"llama-3.2-1b", 4, 2048, 32, 8, 64, 0, 32}};
    if (!options.quick) {
      shapes.push_back({"llama-3.1-8b", 4, 2048, 32, 8, 128, 0, 8});
      shapes.push_back({"llama-3.2-1b decode", 64, 1, 32, 8, 64, 4096, 32});
    }
    for (const RopeShape& s : shapes) {
      const auto config = config_of(s);
      const std::int64_t H = s.NH + s.NKV, st = (s.NH + 2 * s.NKV) * s.HD, sb = s.T * st;
      const std::int64_t n = s.B * sb;
      Buf<bf16> qkv(n);
      kiln::bench::fill_random(qkv.p, n, DType::bf16, 1, -2.f, 2.f, stream);
      const double bytes = 2.0 * s.B * s.T * H * s.HD * sizeof(bf16);
      auto add = [&](const char* op, double ms) {
        report.add(nlohmann::json{{"op", op},
                                  {"impl", "kiln"},
                                  {"shape", s.str()},
                                  {"B", s.B},
                                  {"T", s.T},
                                  {"NH", s.NH},
                                  {"NKV", s.NKV},
                                  {"HD", s.HD},
                                  {"dtype", "bf16"},
                                  {"ms", ms},
                                  {"bytes", bytes},
                                  {"gbps", kiln::bench::gbps(bytes, ms)}});
      };
      const std::function<void(cudaStream_t)> fwd = [&](cudaStream_t stm) {
        kiln::rope_fwd(qkv.p, s.B, s.T, H, sb, st, s.pos_offset, config, KILN_DTYPE_BF16, stm);
      };
      const std::function<void(cudaStream_t)> bwd = [&](cudaStream_t stm) {
        kiln::rope_bwd(qkv.p, s.B, s.T, H, sb, st, s.pos_offset, config, KILN_DTYPE_BF16, stm);
      };
      if (check("fwd", s, config, qkv.p, false, stream)) {
        add("rope_fwd", kiln::bench::time_region(fwd, stream, options).median_ms);
      }
      if (check("bwd", s, config, qkv.p, true, stream)) {
        add("rope_bwd", kiln::bench::time_region(bwd, stream, options).median_ms);
      }
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_rope: %s\n", e.what());
    return 1;
  }
  return 0;
}
