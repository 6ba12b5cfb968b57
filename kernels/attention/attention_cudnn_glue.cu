// The small kernels around the cuDNN attention path (attention_cudnn.cpp): cuDNN's softmax stats
// live in kiln's workspace, packed (B, NHq, Tq'), 16-byte aligned as its engines want, and are
// copied to or from the caller's LSE (B, NHq, Tq), which may sit at any 4-byte address; rows that
// see no key (causal, Tq > Tk), which kiln keeps away from cuDNN, get O = 0 and LSE = -inf here,
// and their dQ = 0.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "errors/check.hpp"
#include "kernels/attention/attention.hpp"

namespace kiln::attn {
namespace {

constexpr int kGlueThreads = 256;

unsigned glue_blocks(int64_t work) {
  // Grid-stride loops: enough blocks to fill any device, never more than the work.
  const int64_t blocks = (work + kGlueThreads - 1) / kGlueThreads;
  return static_cast<unsigned>(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

// lse[bh, i] = i < skipped ? -inf : stats[bh, i - skipped], over rows = B * NHq.
__global__ void lse_out_kernel(const float* stats, float* lse, int64_t rows, int Tq, int skipped) {
  const int64_t n = rows * Tq;
  for (int64_t x = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; x < n;
       x += int64_t{gridDim.x} * blockDim.x) {
    const int64_t bh = x / Tq;
    const int i = static_cast<int>(x % Tq);
    lse[x] = i < skipped ? -INFINITY : stats[bh * (Tq - skipped) + (i - skipped)];
  }
}

__global__ void lse_in_kernel(const float* lse, float* stats, int64_t rows, int Tq, int skipped) {
  const int kept = Tq - skipped;
  const int64_t n = rows * kept;
  for (int64_t x = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; x < n;
       x += int64_t{gridDim.x} * blockDim.x) {
    const int64_t bh = x / kept;
    stats[x] = lse[bh * Tq + skipped + x % kept];
  }
}

// One 16-byte chunk per iteration: (b, t, h, c) with c the chunk of HD.
__global__ void zero_rows_kernel(impl::bf16* x, impl::AttnStrides s, int64_t rows, int NH,
                                 int chunks, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int c = static_cast<int>(i % chunks);
    int64_t r = i / chunks;
    const int h = static_cast<int>(r % NH);
    r /= NH;
    const int64_t t = r % rows, b = r / rows;
    *reinterpret_cast<int4*>(x + b * s.b + t * s.t + h * s.h + c * 8) = make_int4(0, 0, 0, 0);
  }
}

}  // namespace
}  // namespace kiln::attn

namespace kiln::impl {

void attention_cudnn_lse_out(const float* stats, float* lse, int B, int NHq, int Tq, int skipped,
                             cudaStream_t stream) {
  const int64_t rows = int64_t{B} * NHq;
  attn::lse_out_kernel<<<attn::glue_blocks(rows * Tq), attn::kGlueThreads, 0, stream>>>(
      stats, lse, rows, Tq, skipped);
  KILN_LAUNCH_CHECK(stream);
}

void attention_cudnn_lse_in(const float* lse, float* stats, int B, int NHq, int Tq, int skipped,
                            cudaStream_t stream) {
  const int64_t rows = int64_t{B} * NHq;
  attn::lse_in_kernel<<<attn::glue_blocks(rows * (Tq - skipped)), attn::kGlueThreads, 0, stream>>>(
      lse, stats, rows, Tq, skipped);
  KILN_LAUNCH_CHECK(stream);
}

void attention_zero_rows(bf16* x, const AttnStrides& s, int B, int64_t rows, int NH, int HD,
                         cudaStream_t stream) {
  const int chunks = HD / 8;
  const int64_t n = int64_t{B} * rows * NH * chunks;
  if (n == 0) return;
  attn::zero_rows_kernel<<<attn::glue_blocks(n), attn::kGlueThreads, 0, stream>>>(x, s, rows, NH,
                                                                                  chunks, n);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
