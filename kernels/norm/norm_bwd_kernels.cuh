// LayerNorm and RMSNorm backward kernels (one template, kRms selects the variant), included by the
// translation units that instantiate them.
//
// Persistent blocks, each walking a fixed set of rows. dx += rstd * (g - mean(g) - xhat *
// mean(g * xhat)) is written per row; dgamma / dbeta partial sums stay on chip (registers in warp
// mode, the owning thread's shared-memory slots in block mode) and each block writes one row of
// fp32 partials to the workspace. A finalize kernel sums the partials of each column in block
// order. No atomics anywhere: the result depends only on the grid, which depends only on N, C and
// the device, so it is bitwise the same run to run.
//
// Generic kernels (a block per row for dx, column slabs for the partials, scalar accesses) serve
// rows whose C is not a multiple of the pack size or too long for the on-chip sums.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/reduce.cuh"
#include "kernels/common/rows.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/norm/norm_params.cuh"

namespace kiln::dev::norm {

// ---------------------------------------------------------------------------------------------
// Per-thread slots in shared memory: for each of the thread's packs k, its dgamma (a = 0) and
// dbeta (a = 1, LayerNorm) sums and its gamma as floats (a = kArrays), which so needs no
// registers. Thread t's slot i is word t * stride + i: an odd stride puts a warp's accesses to
// one i in 32 different banks, and every offset is a compile-time constant from one base address.
template <int kPacks, int kArrays, int kPack>
__host__ __device__ constexpr int acc_stride() {
  return kPacks * (kArrays + 1) * kPack + 1;
}
template <int kArrays, int kPack>
__device__ __forceinline__ constexpr int acc_slot(int k, int a, int e) {
  return (k * (kArrays + 1) + a) * kPack + e;
}
// Fills the thread's slots for packs first, first + step, ...: zero sums, and gamma (zeros past
// the row's vec packs, whose slots then only ever add zeros and are never read).
template <typename T, int kPacks, int kArrays>
__device__ __forceinline__ void init_slots(float* acc, const T* gamma, int first, int step,
                                           int vec) {
  constexpr int kPack = Vec16<T>::kSize;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = first + k * step;
    const Vec16<T> g = j < vec ? load16(gamma + j * kPack) : zero16<T>();
#pragma unroll
    for (int e = 0; e < kPack; ++e) {
#pragma unroll
      for (int a = 0; a < kArrays; ++a)
        acc[acc_slot<kArrays, kPack>(k, a, e)] = 0.0f;
      acc[acc_slot<kArrays, kPack>(k, kArrays, e)] = get(g, e);
    }
  }
}
// dgamma += dy * xhat, and (LayerNorm) dbeta += dy, in the slots of element e of pack k.
template <bool kRms, int kPack>
__device__ __forceinline__ void add_to_slots(float* acc, int k, int e, float dyf, float xhat) {
  constexpr int kArrays = kRms ? 1 : 2;
  acc[acc_slot<kArrays, kPack>(k, 0, e)] = fmaf(dyf, xhat, acc[acc_slot<kArrays, kPack>(k, 0, e)]);
  if constexpr (!kRms) acc[acc_slot<kArrays, kPack>(k, 1, e)] += dyf;
}

// Backward, warp mode: 8 warps per block, a row per kLanes lanes, persistent over rows. Each lane
// holds the same columns in every row it visits, so the dgamma / dbeta sums never leave the
// chip: in registers for sub-warp rows (one pack per lane), and for whole-warp rows (up to
// kBwdMaxWarpPacks packs per lane, too many registers) in the thread's shared-memory slots.
template <typename T, bool kRms, int kLanes, int kPacks>
__global__ void __launch_bounds__(kBwdWarpThreads, kBwdWarpMinBlocks)
    norm_bwd_warp_kernel(const BwdParams<T> p) {
  static_assert(kLanes > 0, "warp mode");
  static_assert(kLanes == 32 || kPacks == 1, "sub-warp rows hold one pack per lane");
  constexpr bool kSmemAcc = kLanes == 32;
  constexpr int kPack = Vec16<T>::kSize;
  constexpr int kArrays = kRms ? 1 : 2;
  constexpr int kWarps = kBwdWarpThreads / 32;
  constexpr int kRowsPerIter = kBwdWarpThreads / kLanes;
  constexpr int kStride = acc_stride<kPacks, kArrays, kPack>();
  // kSmemAcc: (kBwdWarpThreads, kStride) slots; else (kWarps, C) for the final sum.
  extern __shared__ float4 smem_raw[];
  float* smem = reinterpret_cast<float*>(smem_raw);
  const int vec = p.C / kPack;
  const int rank = threadIdx.x % kLanes;
  const int warp = threadIdx.x / 32;
  const float inv_c = 1.0f / static_cast<float>(p.C);
  float* acc = smem + threadIdx.x * kStride;

  float dg[kPacks][kPack], db[kPacks][kPack];
  if constexpr (kSmemAcc) {
    init_slots<T, kPacks, kArrays>(acc, p.gamma, rank, kLanes, vec);
  } else {
#pragma unroll
    for (int k = 0; k < kPacks; ++k)
#pragma unroll
      for (int e = 0; e < kPack; ++e)
        dg[k][e] = db[k][e] = 0.0f;
  }

  // The trip count depends on blockIdx only, so every lane of the block runs every iteration.
#pragma unroll 1
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kRowsPerIter; base < p.N;
       base += static_cast<std::int64_t>(gridDim.x) * kRowsPerIter) {
    const std::int64_t row = base + threadIdx.x / kLanes;
    const bool active = row < p.N;
    const std::int64_t offset = row * p.C;
    Vec16<T> dyv[kPacks], xv[kPacks], dxv[kPacks], gv[kPacks];
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int j = rank + k * kLanes;
      const bool ok = active && j < vec;
      // Zeros where there is no element: they contribute nothing below.
      dyv[k] = ok ? load16(p.dy + offset + j * kPack) : zero16<T>();
      xv[k] = ok ? load16(p.x + offset + j * kPack) : zero16<T>();
      dxv[k] = ok ? load16(p.dx + offset + j * kPack) : zero16<T>();
      if constexpr (!kSmemAcc) gv[k] = ok ? load16(p.gamma + j * kPack) : zero16<T>();
    }
    // gamma[column of element e of pack k]
    auto gamma_of = [&](int k, int e) {
      if constexpr (kSmemAcc) {
        return acc[acc_slot<kArrays, kPack>(k, kArrays, e)];
      } else {
        return get(gv[k], e);
      }
    };
    const float mu = (!kRms && active) ? p.mean[row] : 0.0f;
    const float rs = active ? p.rstd[row] : 0.0f;

    // The parameter sums need no row statistic: take them now, so that only g and xhat (or the
    // packs they come from) stay live across the reductions.
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        const float dyf = get(dyv[k], e);
        const float xhat = (get(xv[k], e) - mu) * rs;
        const float g = dyf * gamma_of(k, e);
        sum_g += g;
        sum_gx = fmaf(g, xhat, sum_gx);
        if constexpr (kSmemAcc) {
          // Slots of absent elements only ever add zeros (dy is zero there); they are not read.
          add_to_slots<kRms, kPack>(acc, k, e, dyf, xhat);
        } else {
          dg[k][e] = fmaf(dyf, xhat, dg[k][e]);
          db[k][e] += dyf;
        }
      }
    }
    if constexpr (!kRms) sum_g = lanes_sum<kLanes>(sum_g);
    sum_gx = lanes_sum<kLanes>(sum_gx);
    const float mean_g = kRms ? 0.0f : sum_g * inv_c, mean_gx = sum_gx * inv_c;

#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int j = rank + k * kLanes;
      const bool ok = active && j < vec;
      float out[kPack];
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        const float xhat = (get(xv[k], e) - mu) * rs;
        const float g = get(dyv[k], e) * gamma_of(k, e);
        out[e] = fmaf(rs, g - mean_g - xhat * mean_gx, get(dxv[k], e));
      }
      if (ok) store16(p.dx + offset + j * kPack, make16<T>(out));
    }
  }

  if constexpr (!kSmemAcc) {
    // Lanes of the same rank in different rows of a warp hold the same columns: butterfly,
    // then one row of the warp leaves its sums in the warp's (C) slice.
#pragma unroll
    for (int offset = kLanes; offset < 32; offset <<= 1)
#pragma unroll
      for (int k = 0; k < kPacks; ++k)
#pragma unroll
        for (int e = 0; e < kPack; ++e) {
          dg[k][e] += __shfl_xor_sync(kFullMask, dg[k][e], offset);
          if constexpr (!kRms) db[k][e] += __shfl_xor_sync(kFullMask, db[k][e], offset);
        }
  }
  // Then the warps, summed in warp order: one array at a time for the register sums (their
  // slices hold one array), both at once for the shared-memory sums.
#pragma unroll
  for (int a = 0; a < kArrays; ++a) {
    if constexpr (!kSmemAcc) {
      if (threadIdx.x % 32 < kLanes) {
        const int j = rank;
        if (j < vec) {
#pragma unroll
          for (int e = 0; e < kPack; ++e)
            smem[warp * p.C + j * kPack + e] = a == 0 ? dg[0][e] : db[0][e];
        }
      }
    }
    __syncthreads();
    float* out = p.partials + (static_cast<std::int64_t>(blockIdx.x) * kArrays + a) * p.c_pad;
    for (int c = threadIdx.x; c < p.C; c += kBwdWarpThreads) {
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        if constexpr (kSmemAcc) {
          const int j = c / kPack, thread = w * 32 + j % 32;
          s += smem[thread * kStride + acc_slot<kArrays, kPack>(j / 32, a, c % kPack)];
        } else {
          s += smem[w * p.C + c];
        }
      }
      out[c] = s;
    }
    if constexpr (!kSmemAcc) __syncthreads();
  }
}

// Backward, block mode: a block per row, persistent over rows. Each thread owns the same columns
// in every row; their dgamma / dbeta sums live in the thread's shared-memory slots (registers
// would run out for wide rows).
template <typename T, bool kRms, int kPacks>
__global__ void __launch_bounds__(kBwdMaxBlockThreads) norm_bwd_block_kernel(const BwdParams<T> p) {
  constexpr int kPack = Vec16<T>::kSize;
  constexpr int kArrays = kRms ? 1 : 2;
  constexpr int kStride = acc_stride<kPacks, kArrays, kPack>();
  extern __shared__ float4 smem_raw[];  // (blockDim.x, kStride) slots, then 32 float2 scratch
  float* acc = reinterpret_cast<float*>(smem_raw) + threadIdx.x * kStride;
  float2* scratch = reinterpret_cast<float2*>(smem_raw) + (blockDim.x * kStride + 1) / 2;
  const int vec = p.C / kPack;
  const int tid = threadIdx.x, threads = blockDim.x;
  const float inv_c = 1.0f / static_cast<float>(p.C);

  init_slots<T, kPacks, kArrays>(acc, p.gamma, tid, threads, vec);

#pragma unroll 1
  for (std::int64_t row = blockIdx.x; row < p.N; row += gridDim.x) {
    const std::int64_t offset = row * p.C;
    Vec16<T> dyv[kPacks], xv[kPacks], dxv[kPacks];
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int j = tid + k * threads;
      const bool ok = j < vec;
      dyv[k] = ok ? load16(p.dy + offset + j * kPack) : zero16<T>();
      xv[k] = ok ? load16(p.x + offset + j * kPack) : zero16<T>();
      dxv[k] = ok ? load16(p.dx + offset + j * kPack) : zero16<T>();
    }
    const float mu = kRms ? 0.0f : p.mean[row];
    const float rs = p.rstd[row];
    // Parameter sums first (they need no row statistic), as in the warp kernel. Slots of absent
    // elements only ever add zeros and are never read.
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        const float dyf = get(dyv[k], e);
        const float xhat = (get(xv[k], e) - mu) * rs;
        const float g = dyf * acc[acc_slot<kArrays, kPack>(k, kArrays, e)];
        sum_g += g;
        sum_gx = fmaf(g, xhat, sum_gx);
        add_to_slots<kRms, kPack>(acc, k, e, dyf, xhat);
      }
    }
    block_sum2_any(sum_g, sum_gx, scratch);
    const float mean_g = kRms ? 0.0f : sum_g * inv_c, mean_gx = sum_gx * inv_c;
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int j = tid + k * threads;
      if (j < vec) {
        float out[kPack];
#pragma unroll
        for (int e = 0; e < kPack; ++e) {
          const float xhat = (get(xv[k], e) - mu) * rs;
          const float g = get(dyv[k], e) * acc[acc_slot<kArrays, kPack>(k, kArrays, e)];
          out[e] = fmaf(rs, g - mean_g - xhat * mean_gx, get(dxv[k], e));
        }
        store16(p.dx + offset + j * kPack, make16<T>(out));
      }
    }
  }

#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = tid + k * threads;
    if (j < vec) {
#pragma unroll
      for (int a = 0; a < kArrays; ++a) {
        float* out = p.partials + (static_cast<std::int64_t>(blockIdx.x) * kArrays + a) * p.c_pad +
                     j * kPack;
#pragma unroll
        for (int e = 0; e < kPack; e += 4) {
          const int i = acc_slot<kArrays, kPack>(k, a, e);
          *reinterpret_cast<float4*>(out + e) =
              make_float4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]);
        }
      }
    }
  }
}

// dgamma[c] += sum_p partials[p][0][c] (and dbeta from array 1), the partials summed in a fixed
// order: 32 phases each summing every 32nd partial row, then the phases in order.
// Block (kFinalizeCols, kFinalizeRows); grid (ceil(C / kFinalizeCols), kArrays).
template <int kArrays>
__global__ void __launch_bounds__(kFinalizeCols* kFinalizeRows)
    norm_bwd_finalize_kernel(float* dgamma, float* dbeta, const float* partials, int P, int C,
                             int c_pad) {
  __shared__ float red[kFinalizeRows][kFinalizeCols + 1];
  const int c = blockIdx.x * kFinalizeCols + threadIdx.x;
  const int a = blockIdx.y;
  float s = 0.0f;
  if (c < C) {
    for (int i = threadIdx.y; i < P; i += kFinalizeRows)
      s += partials[(static_cast<std::int64_t>(i) * kArrays + a) * c_pad + c];
  }
  red[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = 0.0f;
#pragma unroll
    for (int i = 0; i < kFinalizeRows; ++i)
      t += red[i][threadIdx.x];
    float* out = a == 0 ? dgamma : dbeta;
    out[c] += t;
  }
}

// ---------------------------------------------------------------------------------------------
// Generic backward, dx: a block per row.
template <typename T, bool kRms>
__global__ void __launch_bounds__(kGenericThreads)
    norm_bwd_dx_generic_kernel(const BwdParams<T> p) {
  __shared__ float2 scratch[32];
  const std::int64_t C = p.C;
  const float inv_c = 1.0f / static_cast<float>(p.C);
  for (std::int64_t row = blockIdx.x; row < p.N; row += gridDim.x) {
    const std::int64_t offset = row * C;
    const float mu = kRms ? 0.0f : p.mean[row];
    const float rs = p.rstd[row];
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (std::int64_t c = threadIdx.x; c < C; c += kGenericThreads) {
      const float xhat = (to_float(p.x[offset + c]) - mu) * rs;
      const float g = to_float(p.dy[offset + c]) * to_float(p.gamma[c]);
      sum_g += g;
      sum_gx = fmaf(g, xhat, sum_gx);
    }
    block_sum2_any(sum_g, sum_gx, scratch);
    const float mean_g = kRms ? 0.0f : sum_g * inv_c, mean_gx = sum_gx * inv_c;
    for (std::int64_t c = threadIdx.x; c < C; c += kGenericThreads) {
      const float xhat = (to_float(p.x[offset + c]) - mu) * rs;
      const float g = to_float(p.dy[offset + c]) * to_float(p.gamma[c]);
      p.dx[offset + c] =
          from_float<T>(fmaf(rs, g - mean_g - xhat * mean_gx, to_float(p.dx[offset + c])));
    }
  }
}

// Generic backward, dgamma / dbeta partials: block (32 columns, 8 row phases) per column slab and
// row chunk; partial row blockIdx.y covers rows [blockIdx.y * rows_per_chunk, + rows_per_chunk).
constexpr int kGenericPartialRows = 8;
template <typename T, bool kRms>
__global__ void __launch_bounds__(32 * kGenericPartialRows)
    norm_bwd_partials_generic_kernel(const BwdParams<T> p, std::int64_t rows_per_chunk) {
  constexpr int kArrays = kRms ? 1 : 2;
  __shared__ float red[kArrays][kGenericPartialRows][33];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.y) * rows_per_chunk;
  const std::int64_t end = begin + rows_per_chunk < p.N ? begin + rows_per_chunk : p.N;
  float dg = 0.0f, db = 0.0f;
  if (c < p.C) {
    for (std::int64_t row = begin + threadIdx.y; row < end; row += kGenericPartialRows) {
      const float dyf = to_float(p.dy[row * p.C + c]);
      const float mu = kRms ? 0.0f : p.mean[row];
      dg = fmaf(dyf, (to_float(p.x[row * p.C + c]) - mu) * p.rstd[row], dg);
      db += dyf;
    }
  }
  red[0][threadIdx.y][threadIdx.x] = dg;
  if constexpr (!kRms) red[kArrays - 1][threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y < kArrays && c < p.C) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kGenericPartialRows; ++i)
      s += red[threadIdx.y][i][threadIdx.x];
    p.partials[(static_cast<std::int64_t>(blockIdx.y) * kArrays + threadIdx.y) * p.c_pad + c] = s;
  }
}

}  // namespace kiln::dev::norm
