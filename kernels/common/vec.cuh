// 16-byte vector access and element conversion: the unit every memory-bound kernel moves.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace kiln::dev {

using bf16 = __nv_bfloat16;

// 16 bytes of T, aligned so that one load or store is a single 128-bit transaction.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

// `p` must be 16-byte aligned (launchers check this before launching).
template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}
// Streaming load (evict-first): for data read once, so it does not push reused data out of L2.
template <typename T>
__device__ __forceinline__ Pack<T> load_pack_stream(const T* p) {
  const int4 raw = __ldcs(reinterpret_cast<const int4*>(p));
  return *reinterpret_cast<const Pack<T>*>(&raw);
}
template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& pack) {
  *reinterpret_cast<Pack<T>*>(p) = pack;
}
// Streaming store: for outputs not read again soon.
template <typename T>
__device__ __forceinline__ void store_pack_stream(T* p, const Pack<T>& pack) {
  __stcs(reinterpret_cast<int4*>(p), *reinterpret_cast<const int4*>(&pack));
}

__device__ __forceinline__ float to_float(float x) {
  return x;
}
__device__ __forceinline__ float to_float(bf16 x) {
  return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
// Round to nearest even, as PyTorch and the references do.
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// Two floats as a packed bf16x2 register (low half = a), the operand format of mma.sync.
__device__ __forceinline__ std::uint32_t pack_bf16x2(float a, float b) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

}  // namespace kiln::dev
