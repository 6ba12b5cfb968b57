// Warp and block reductions in fp32. Deterministic: a fixed butterfly order, no atomics.
#pragma once

#include <cuda_runtime.h>

namespace kiln::dev {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  return x;
}

// Sum over a block of kThreads threads (a multiple of 32), returned to every thread. `scratch`
// holds kThreads / 32 floats of shared memory; the call ends with the scratch free for reuse.
template <int kThreads>
__device__ __forceinline__ float block_sum(float x, float* scratch) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  constexpr int kWarps = kThreads / 32;
  x = warp_sum(x);
  if constexpr (kWarps == 1) return x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  float total = lane < kWarps ? scratch[lane] : 0.0f;
  total = warp_sum(total);
  __syncthreads();  // scratch may be reused by the caller's next reduction
  return total;
}

template <int kThreads>
__device__ __forceinline__ float block_max(float x, float* scratch) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  constexpr int kWarps = kThreads / 32;
  x = warp_max(x);
  if constexpr (kWarps == 1) return x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  float m = lane < kWarps ? scratch[lane] : -INFINITY;
  m = warp_max(m);
  __syncthreads();
  return m;
}

}  // namespace kiln::dev
