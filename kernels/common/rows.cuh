// Building blocks of the row-wise kernels (LayerNorm, RMSNorm, softmax): a row is held in
// registers as 16-byte packs by a group of threads, and reduced over that group.
//
// A row group is either kLanes consecutive lanes of a warp (kLanes a power of two <= 32; a warp
// then holds 32 / kLanes rows) or, with kLanes == 0, the whole block (any whole number of warps).
// Thread `rank` of a group holds the packs rank, rank + size, rank + 2 size, ... of its row, so a
// warp's loads of one k touch consecutive 16-byte chunks. Reductions are butterflies in a fixed
// order: deterministic, and every thread of a group gets the same bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/common/reduce.cuh"
#include "kernels/common/vec.cuh"

namespace kiln::dev {

// Sum / max over aligned groups of kLanes lanes. All 32 lanes of the warp must call.
template <int kLanes>
__device__ __forceinline__ float lanes_sum(float x) {
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "power of two");
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset >>= 1)
    x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}
template <int kLanes>
__device__ __forceinline__ float lanes_max(float x) {
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "power of two");
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset >>= 1)
    x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  return x;
}

// Sum over a block whose size is known only at run time (blockDim.x a multiple of 32, at most
// 1024). `scratch` holds 32 floats of shared memory. Every thread must call; all get the same bits.
__device__ __forceinline__ float block_sum_any(float x, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  x = warp_sum(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : 0.0f;
  x = warp_sum(x);
  __syncthreads();  // the scratch is free again when this returns
  return x;
}
__device__ __forceinline__ float block_max_any(float x, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  x = warp_max(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : -INFINITY;
  x = warp_max(x);
  __syncthreads();
  return x;
}
// Two sums in one round trip through shared memory (`scratch`: 32 float2).
__device__ __forceinline__ void block_sum2_any(float& a, float& b, float2* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) scratch[warp] = make_float2(a, b);
  __syncthreads();
  const float2 v =
      lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : make_float2(0.0f, 0.0f);
  a = warp_sum(v.x);
  b = warp_sum(v.y);
  __syncthreads();
}

// The threads of one row. kLanes > 0: kLanes consecutive lanes; kLanes == 0: the whole block.
template <int kLanes>
struct RowGroup {
  static constexpr bool kBlock = kLanes == 0;
  // Rows a block of `threads` threads holds at once.
  __host__ __device__ static constexpr int rows_per_block(int threads) {
    return kBlock ? 1 : threads / kLanes;
  }
  __device__ static int rank() {
    return kBlock ? static_cast<int>(threadIdx.x) : threadIdx.x % kLanes;
  }
  __device__ static int size() { return kBlock ? static_cast<int>(blockDim.x) : kLanes; }
  // The row slot of this thread within its block.
  __device__ static int slot() { return kBlock ? 0 : threadIdx.x / kLanes; }
  __device__ static float sum(float x, float* scratch) {
    if constexpr (kBlock) {
      return block_sum_any(x, scratch);
    } else {
      return lanes_sum<kLanes>(x);
    }
  }
  __device__ static float max(float x, float* scratch) {
    if constexpr (kBlock) {
      return block_max_any(x, scratch);
    } else {
      return lanes_max<kLanes>(x);
    }
  }
  __device__ static void sum2(float& a, float& b, float2* scratch) {
    if constexpr (kBlock) {
      block_sum2_any(a, b, scratch);
    } else {
      a = lanes_sum<kLanes>(a);
      b = lanes_sum<kLanes>(b);
    }
  }
};

// 16 bytes of T held as four 32-bit words. The row kernels keep their rows in these rather than
// in Pack<T>: a Pack<bf16> is eight 16-bit values, and the compiler gives each its own 32-bit
// register, doubling the registers a row needs. A bf16 is the high half of the float it rounds
// from, so converting a word's halves is a shift or a mask.
template <typename T>
struct Vec16 {
  static constexpr int kSize = 16 / sizeof(T);
  std::uint32_t w[4];
};

// `p` must be 16-byte aligned (the launchers check this before launching).
template <typename T>
__device__ __forceinline__ Vec16<T> load16(const T* p) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  return Vec16<T>{{raw.x, raw.y, raw.z, raw.w}};
}
template <typename T>
__device__ __forceinline__ void store16(T* p, const Vec16<T>& v) {
  *reinterpret_cast<uint4*>(p) = make_uint4(v.w[0], v.w[1], v.w[2], v.w[3]);
}
template <typename T>
__device__ __forceinline__ Vec16<T> zero16() {
  return Vec16<T>{{0u, 0u, 0u, 0u}};
}

// Element e (a compile-time constant after unrolling) as float.
template <typename T>
__device__ __forceinline__ float get(const Vec16<T>& v, int e) {
  if constexpr (std::is_same_v<T, bf16>) {
    const std::uint32_t word = v.w[e / 2];
    return __uint_as_float(e % 2 ? (word & 0xffff0000u) : (word << 16));
  } else {
    static_assert(std::is_same_v<T, float>, "bf16 or float");
    return __uint_as_float(v.w[e]);
  }
}

// A vector from kSize floats, rounded to nearest even for bf16 (two per conversion).
template <typename T>
__device__ __forceinline__ Vec16<T> make16(const float (&f)[Vec16<T>::kSize]) {
  Vec16<T> v;
  if constexpr (std::is_same_v<T, bf16>) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __nv_bfloat162 two = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
      v.w[i] = *reinterpret_cast<const std::uint32_t*>(&two);
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      v.w[i] = __float_as_uint(f[i]);
  }
  return v;
}

// Row-to-thread mappings. Packs per row `vec` = C / Pack<T>::kSize picks the narrowest group that
// holds the row in at most a few packs per thread, so short rows do not idle most of a warp and
// long rows do not run out of registers. `f` is called with std::integral_constant<int, kLanes>
// and std::integral_constant<int, kPacks>, and so instantiates every mapping it may launch.
template <int V>
using IntC = std::integral_constant<int, V>;

// For kernels that hold a row and nothing across rows (forward passes, softmax): up to 8 packs
// per lane in warp mode (C <= 2048 in bf16), then a block per row with 4 packs per thread and at
// most kRowMaxBlockThreads threads (C <= 16384 in bf16, 8192 in fp32).
constexpr int kRowMaxWarpPacks = 8;
constexpr int kRowBlockPacks = 4;
constexpr int kRowWarpThreads = 256;
constexpr int kRowMaxBlockThreads = 512;
constexpr int kRowMaxPacks = kRowMaxBlockThreads * kRowBlockPacks;
// Blocks per SM the compiler must fit (its register budget): enough warps to keep the memory
// system busy, as these kernels hold one row per group and are not persistent. Warp mode: 32
// warps (64 registers) up to 4 packs per lane, 16 (128 registers) beyond; block mode: 64
// registers at the largest block.
template <int kLanes, int kPacks>
constexpr int row_min_blocks() {
  if constexpr (kLanes == 0) {
    return 2;
  } else {
    return kPacks <= 4 ? 4 : 2;
  }
}
template <int kLanes>
constexpr int row_block_size() {
  return kLanes ? kRowWarpThreads : kRowMaxBlockThreads;
}
template <typename F>
decltype(auto) with_row_mapping(int vec, F&& f) {
  if (vec <= 4) return f(IntC<4>{}, IntC<1>{});
  if (vec <= 8) return f(IntC<8>{}, IntC<1>{});
  if (vec <= 16) return f(IntC<16>{}, IntC<1>{});
  if (vec <= 32) return f(IntC<32>{}, IntC<1>{});
  if (vec <= 64) return f(IntC<32>{}, IntC<2>{});
  if (vec <= 96) return f(IntC<32>{}, IntC<3>{});
  if (vec <= 128) return f(IntC<32>{}, IntC<4>{});
  if (vec <= 192) return f(IntC<32>{}, IntC<6>{});
  if (vec <= 256) return f(IntC<32>{}, IntC<8>{});
  return f(IntC<0>{}, IntC<kRowBlockPacks>{});
}

// Threads of a block-per-row mapping: whole warps covering `vec` packs at `packs` per thread.
__host__ __device__ constexpr int row_block_threads(int vec, int packs) {
  return ((vec + packs - 1) / packs + 31) / 32 * 32;
}

}  // namespace kiln::dev
