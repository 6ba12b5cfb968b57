// LayerNorm and RMSNorm forward kernels (one template, kRms selects the variant; kResidual fuses
// residual = a + b in front), included by the translation units that instantiate them.
//
// The row is loaded once into registers as 16-byte packs, reduced twice (mean, then the squared
// deviations, both exact in fp32 because the row is in registers), normalized and stored. One row
// per thread group; the grid covers the rows. A generic kernel (a block per row, scalar accesses,
// the row re-read from L1/L2) serves rows whose C is not a multiple of the pack size or too long
// for registers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/reduce.cuh"
#include "kernels/common/row_launch.cuh"
#include "kernels/common/rows.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/norm/norm_params.cuh"

namespace kiln::dev::norm {

// ---------------------------------------------------------------------------------------------
// Forward, row in registers.
template <typename T, bool kRms, bool kResidual, int kLanes, int kPacks>
__global__ void __launch_bounds__(row_block_size<kLanes>(), row_min_blocks<kLanes, kPacks>())
    norm_fwd_kernel(const FwdParams<T> p) {
  using G = RowGroup<kLanes>;
  constexpr int kPack = Vec16<T>::kSize;
  __shared__ float scratch[32];
  const int vec = p.C / kPack;
  const auto [row, offset, active, rank, stride] = RowPlace<kLanes>::here(p.N, p.C);

  Vec16<T> xv[kPacks];
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = rank + k * stride;
    xv[k] = zero16<T>();  // zeros: they add nothing to the sums below
    if (active && j < vec) {
      if constexpr (kResidual) {
        const Vec16<T> a = load16(p.x + offset + j * kPack);
        const Vec16<T> b = load16(p.b + offset + j * kPack);
        float s[kPack];
#pragma unroll
        for (int e = 0; e < kPack; ++e)
          s[e] = get(a, e) + get(b, e);
        // Normalize the rounded sum: the backward reads this stored residual as its x.
        xv[k] = make16<T>(s);
        store16(p.residual + offset + j * kPack, xv[k]);
      } else {
        xv[k] = load16(p.x + offset + j * kPack);
      }
    }
  }

  float mean = 0.0f;
  if constexpr (!kRms) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < kPacks; ++k)
#pragma unroll
      for (int e = 0; e < kPack; ++e)
        s += get(xv[k], e);
    mean = G::sum(s, scratch) / static_cast<float>(p.C);
  }
  float sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    if (rank + k * stride < vec) {
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        const float d = get(xv[k], e) - mean;
        sq = fmaf(d, d, sq);
      }
    }
  }
  const float rstd = rsqrtf(G::sum(sq, scratch) / static_cast<float>(p.C) + p.eps);

#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = rank + k * stride;
    if (active && j < vec) {
      const Vec16<T> g = load16(p.gamma + j * kPack);
      float out[kPack];
      if constexpr (kRms) {
#pragma unroll
        for (int e = 0; e < kPack; ++e)
          out[e] = get(xv[k], e) * rstd * get(g, e);
      } else {
        const Vec16<T> bt = load16(p.beta + j * kPack);
#pragma unroll
        for (int e = 0; e < kPack; ++e)
          out[e] = fmaf((get(xv[k], e) - mean) * rstd, get(g, e), get(bt, e));
      }
      store16(p.y + offset + j * kPack, make16<T>(out));
    }
  }
  if (active && rank == 0) {
    if constexpr (!kRms) {
      if (p.mean) p.mean[row] = mean;
    }
    if (p.rstd) p.rstd[row] = rstd;
  }
}

// ---------------------------------------------------------------------------------------------
// Generic kernels: any C (including C not a multiple of the pack size), a block per row, scalar
// accesses, several passes over the row (the repeats come from L1/L2).
template <typename T, bool kRms, bool kResidual>
__global__ void __launch_bounds__(kGenericThreads) norm_fwd_generic_kernel(const FwdParams<T> p) {
  __shared__ float scratch[32];
  const std::int64_t C = p.C;
  for (std::int64_t row = blockIdx.x; row < p.N; row += gridDim.x) {
    const std::int64_t offset = row * C;
    // x: the input, or the residual this block writes (each thread re-reads only its own writes).
    const T* x = kResidual ? p.residual + offset : p.x + offset;
    float s = 0.0f;
    for (std::int64_t c = threadIdx.x; c < C; c += kGenericThreads) {
      if constexpr (kResidual) {
        const T r = from_float<T>(to_float(p.x[offset + c]) + to_float(p.b[offset + c]));
        p.residual[offset + c] = r;
        s += to_float(r);
      } else {
        s += to_float(x[c]);
      }
    }
    const float mean = kRms ? 0.0f : block_sum<kGenericThreads>(s, scratch) / static_cast<float>(C);
    float sq = 0.0f;
    for (std::int64_t c = threadIdx.x; c < C; c += kGenericThreads) {
      const float d = to_float(x[c]) - mean;
      sq = fmaf(d, d, sq);
    }
    const float rstd =
        rsqrtf(block_sum<kGenericThreads>(sq, scratch) / static_cast<float>(C) + p.eps);
    for (std::int64_t c = threadIdx.x; c < C; c += kGenericThreads) {
      const float xhat = (to_float(x[c]) - mean) * rstd;
      p.y[offset + c] = from_float<T>(kRms ? xhat * to_float(p.gamma[c])
                                           : fmaf(xhat, to_float(p.gamma[c]), to_float(p.beta[c])));
    }
    if (threadIdx.x == 0) {
      if constexpr (!kRms) {
        if (p.mean) p.mean[row] = mean;
      }
      if (p.rstd) p.rstd[row] = rstd;
    }
  }
}

}  // namespace kiln::dev::norm
