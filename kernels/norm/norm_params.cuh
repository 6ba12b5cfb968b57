// The parameters and launch constants shared by the LayerNorm / RMSNorm kernels
// (norm_fwd_kernels.cuh, norm_bwd_kernels.cuh) and their host dispatch (norm_launch.cuh).
#pragma once

#include <cstdint>

#include "kernels/common/rows.cuh"

namespace kiln::dev::norm {

constexpr int kFwdWarpThreads = kRowWarpThreads;  // warp mode forward block
constexpr int kBwdWarpThreads = 256;  // warp mode backward block (8 warps share columns)
constexpr int kGenericThreads = 256;
// Backward block mode: fewer packs per thread than the forward, since dx, dy and x are all live.
constexpr int kBwdMaxWarpPacks = 4;
constexpr int kBwdMaxBlockThreads = 512;
// Two warp-mode blocks per SM at least (so at most 128 registers): a block is 8 rows in flight,
// and one block per SM leaves the memory system idle while it reduces.
constexpr int kBwdWarpMinBlocks = 2;
// Finalize: 32 columns x 32 partial-row phases per block.
constexpr int kFinalizeCols = 32;
constexpr int kFinalizeRows = 32;

template <typename T>
struct FwdParams {
  T* y;            // (N, C) out
  float* mean;     // (N) out, may be null; LayerNorm only
  float* rstd;     // (N) out, may be null
  T* residual;     // (N, C) out: a + b, fused residual variant only (may alias x or b)
  const T* x;      // (N, C): the input, or `a` of the fused residual variant
  const T* b;      // (N, C): fused residual variant only
  const T* gamma;  // (C)
  const T* beta;   // (C), LayerNorm only
  std::int64_t N;
  int C;
  float eps;
};

template <typename T>
struct BwdParams {
  T* dx;              // (N, C) in/out: accumulates
  float* partials;    // (P, arrays, c_pad) out: one row of column sums per block
  const T* dy;        // (N, C)
  const T* x;         // (N, C)
  const T* gamma;     // (C)
  const float* mean;  // (N), LayerNorm only
  const float* rstd;  // (N)
  std::int64_t N;
  int C;
  int c_pad;  // partials' row stride: C rounded up to 4 floats (16 bytes)
};

}  // namespace kiln::dev::norm
