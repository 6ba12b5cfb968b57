// Host-side dispatch of the LayerNorm / RMSNorm kernels: picks the mapping by row width, sizes
// the persistent backward grid from the device's occupancy, and launches. Included by the
// translation units that instantiate the kernels (layernorm_*.cu, rmsnorm_*.cu), which call
// run_fwd / run_bwd.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

#include "errors/check.hpp"
#include "kernels/common/device.hpp"
#include "kernels/common/row_launch.cuh"
#include "kernels/common/rows.cuh"
#include "kernels/norm/norm.hpp"
#include "kernels/norm/norm_bwd_kernels.cuh"
#include "kernels/norm/norm_fwd_kernels.cuh"

namespace kiln::impl::norm {

using dev::Pack;
using namespace dev::norm;

template <typename T, bool kRms, bool kResidual>
void launch_fwd(const FwdParams<T>& p, cudaStream_t stream) {
  launch_rows<T>(
      p,
      [](auto lanes, auto packs) {
        return norm_fwd_kernel<T, kRms, kResidual, decltype(lanes)::value, decltype(packs)::value>;
      },
      norm_fwd_generic_kernel<T, kRms, kResidual>, kGenericThreads, stream);
}

// Blocks of `kernel` (with `threads` threads and `smem` bytes of dynamic shared memory) that fit
// on one SM of the current device, after allowing it that much shared memory. Cached per
// (kernel, device, threads, smem): the attribute call and the occupancy query cost microseconds
// of host time, which every backward of a training step would pay again.
//
// The kernel's dynamic shared memory limit only ever grows: it is one attribute per (kernel,
// device), and one instantiation launches with many sizes (the block kernels' size follows C).
// Setting it to each new size would lower it below a larger size whose launch is already cached
// here, and that launch would then fail.
inline int blocks_per_sm(const void* kernel, int threads, std::size_t smem) {
  static std::mutex mutex;
  static std::map<std::tuple<const void*, int, int, std::size_t>, int> cache;
  static std::map<std::tuple<const void*, int>, std::size_t> allowed;  // limit set, per device
  const int device = current_device_facts().ordinal;
  const auto key = std::make_tuple(kernel, device, threads, smem);
  const std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  std::size_t& limit = allowed[std::make_tuple(kernel, device)];
  if (smem > limit) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
    limit = smem;
  }
  int per_sm = 0;
  KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  KILN_CHECK(per_sm > 0, Status::internal_error, "norm backward: a block of ", threads,
             " threads with ", smem, " bytes of shared memory does not fit on the device");
  cache.emplace(key, per_sm);
  return per_sm;
}

// Blocks of a persistent backward: every block resident at once (one wave), at most the
// workspace's partial rows, and no block without rows.
template <typename Kernel>
int persistent_grid(Kernel kernel, int threads, std::size_t smem, std::int64_t N,
                    std::int64_t rows_per_iteration) {
  const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(kernel), threads, smem);
  const std::int64_t needed = (N + rows_per_iteration - 1) / rows_per_iteration;
  const std::int64_t p = std::min<std::int64_t>(
      {needed, norm_partials_cap(N),
       static_cast<std::int64_t>(per_sm) * current_device_facts().multiprocessors});
  return static_cast<int>(std::max<std::int64_t>(p, 1));
}

// Shared memory of the backward kernels: per-thread accumulator slots (whole-warp rows, block
// mode), or the warps' (C) slices for the final cross-warp sum (sub-warp rows).
template <bool kRms>
std::size_t bwd_slots_smem(int threads, int packs, int pack) {
  const int stride = packs * ((kRms ? 1 : 2) + 1) * pack + 1;  // dev::norm::acc_stride
  return static_cast<std::size_t>(threads) * stride * sizeof(float);
}
template <bool kRms>
std::size_t bwd_warp_smem(int lanes, int packs, int pack, int C) {
  if (lanes == 32) return bwd_slots_smem<kRms>(kBwdWarpThreads, packs, pack);
  return (kBwdWarpThreads / 32) * static_cast<std::size_t>(C) * sizeof(float);
}

// p.partials must hold norm_bwd_workspace_bytes(arrays, N, C); p.c_pad = norm_partials_stride(C).
template <typename T, bool kRms>
void launch_bwd(const BwdParams<T>& p, float* dgamma, float* dbeta, cudaStream_t stream) {
  if (p.N == 0) return;
  constexpr int kPack = Pack<T>::kSize;
  constexpr int kArrays = kRms ? 1 : 2;
  const int vec = p.C / kPack;
  const bool packed = p.C % kPack == 0;
  // Block mode: 2 packs per thread, or 4 for rows too long for kBwdMaxBlockThreads x 2.
  const int block_packs = vec <= 2 * kBwdMaxBlockThreads ? 2 : 4;
  const int block_threads = dev::row_block_threads(vec, block_packs);
  // The slots, then 32 float2 of reduction scratch (one spare float to align it).
  const std::size_t block_smem =
      bwd_slots_smem<kRms>(block_threads, block_packs, kPack) + sizeof(float) + 32 * sizeof(float2);
  const std::size_t smem_limit = current_device_facts().max_shared_memory_per_block_optin;
  int P = 0;
  if (packed && vec <= 32 * kBwdMaxWarpPacks &&
      bwd_warp_smem<kRms>(32, kBwdMaxWarpPacks, kPack, p.C) <= smem_limit) {
    // The forward's mapping, which for up to kBwdMaxWarpPacks packs a lane is a warp mapping;
    // the wider ones are never taken here, and not instantiated.
    dev::with_row_mapping(vec, [&](auto lanes, auto packs) {
      constexpr int kLanes = decltype(lanes)::value, kPacks = decltype(packs)::value;
      if constexpr (kLanes > 0 && kPacks <= kBwdMaxWarpPacks) {
        auto kernel = norm_bwd_warp_kernel<T, kRms, kLanes, kPacks>;
        const std::size_t smem = bwd_warp_smem<kRms>(kLanes, kPacks, kPack, p.C);
        P = persistent_grid(kernel, kBwdWarpThreads, smem, p.N, kBwdWarpThreads / kLanes);
        kernel<<<P, kBwdWarpThreads, smem, stream>>>(p);
      }
    });
  } else if (packed && block_threads <= kBwdMaxBlockThreads && block_smem <= smem_limit) {
    auto launch = [&](auto kernel) {
      P = persistent_grid(kernel, block_threads, block_smem, p.N, 1);
      kernel<<<P, block_threads, block_smem, stream>>>(p);
    };
    if (block_packs == 2) {
      launch(norm_bwd_block_kernel<T, kRms, 2>);
    } else {
      launch(norm_bwd_block_kernel<T, kRms, 4>);
    }
  } else {
    norm_bwd_dx_generic_kernel<T, kRms><<<generic_row_grid(p.N), kGenericThreads, 0, stream>>>(p);
    KILN_LAUNCH_CHECK(stream);
    const std::int64_t cap = norm_partials_cap(p.N);
    const std::int64_t rows_per_chunk = (p.N + cap - 1) / cap;
    P = static_cast<int>((p.N + rows_per_chunk - 1) / rows_per_chunk);
    const dim3 grid(static_cast<unsigned>((p.C + 31) / 32), static_cast<unsigned>(P));
    norm_bwd_partials_generic_kernel<T, kRms>
        <<<grid, dim3(32, kGenericPartialRows), 0, stream>>>(p, rows_per_chunk);
  }
  KILN_LAUNCH_CHECK(stream);
  const dim3 grid(static_cast<unsigned>((p.C + kFinalizeCols - 1) / kFinalizeCols), kArrays);
  norm_bwd_finalize_kernel<kArrays><<<grid, dim3(kFinalizeCols, kFinalizeRows), 0, stream>>>(
      dgamma, dbeta, p.partials, P, p.C, p.c_pad);
  KILN_LAUNCH_CHECK(stream);
}

// One forward of either norm, as the C ABI passed it: residual == nullptr selects the plain
// forward (x = a), else residual = a + b is stored and normalized. mean and beta are LayerNorm's.
template <bool kRms>
void run_fwd(kiln_dtype_t dtype, void* residual, void* y, float* mean, float* rstd, const void* a,
             const void* b, const void* gamma, const void* beta, std::int64_t N, std::int64_t C,
             float eps, cudaStream_t stream) {
  auto run = [&](auto type) {
    using T = decltype(type);
    FwdParams<T> p{};
    p.y = static_cast<T*>(y);
    p.mean = mean;
    p.rstd = rstd;
    p.residual = static_cast<T*>(residual);
    p.x = static_cast<const T*>(a);
    p.b = static_cast<const T*>(b);
    p.gamma = static_cast<const T*>(gamma);
    p.beta = static_cast<const T*>(beta);
    p.N = N;
    p.C = static_cast<int>(C);
    p.eps = eps;
    if (residual) {
      launch_fwd<T, kRms, true>(p, stream);
    } else {
      launch_fwd<T, kRms, false>(p, stream);
    }
  };
  if (dtype == KILN_DTYPE_BF16) {
    run(__nv_bfloat16{});
  } else {
    run(float{});
  }
}

// One backward of either norm; dbeta and mean are LayerNorm's.
template <bool kRms>
void run_bwd(kiln_dtype_t dtype, void* dx, float* dgamma, float* dbeta, const void* dy,
             const void* x, const void* gamma, const float* mean, const float* rstd, std::int64_t N,
             std::int64_t C, void* workspace, cudaStream_t stream) {
  auto run = [&](auto type) {
    using T = decltype(type);
    BwdParams<T> p{};
    p.dx = static_cast<T*>(dx);
    p.partials = static_cast<float*>(workspace);
    p.dy = static_cast<const T*>(dy);
    p.x = static_cast<const T*>(x);
    p.gamma = static_cast<const T*>(gamma);
    p.mean = mean;
    p.rstd = rstd;
    p.N = N;
    p.C = static_cast<int>(C);
    p.c_pad = static_cast<int>(norm_partials_stride(C));
    launch_bwd<T, kRms>(p, dgamma, dbeta, stream);
  };
  if (dtype == KILN_DTYPE_BF16) {
    run(__nv_bfloat16{});
  } else {
    run(float{});
  }
}

}  // namespace kiln::impl::norm
