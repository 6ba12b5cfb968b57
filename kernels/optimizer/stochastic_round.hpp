// Stochastic rounding of fp32 to bf16 and the counter-based random bits it uses. Host and device
// share this code, so the GPU tests can recompute the kernel's rounding bit for bit.
//
// Rounding: add 16 uniform random bits to the 16 bits that bf16 drops, then truncate. The result
// rounds the magnitude up with probability (dropped bits) / 2^16, so E[result] = x exactly for
// every finite x whose rounding stays finite (sign-magnitude: negative values are symmetric).
// NaN and Inf round to nearest even (adding to a NaN's payload could carry into the sign).
//
// Random bits: one 64-bit splitmix64-style hash per group of 4 consecutive elements of a tensor
// gives each element of the group its own 16 bits, keyed by (seed, step, tensor, group): no state,
// the same on every device and launch shape.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define KILN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define KILN_HOST_DEVICE inline
#endif

namespace kiln::sr {

KILN_HOST_DEVICE std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The key of (seed, step, tensor): computed once per tensor and step.
KILN_HOST_DEVICE std::uint64_t stream_key(std::uint64_t seed, std::uint64_t step,
                                          std::uint64_t tensor) {
  return mix64(mix64(seed ^ 0x6B696C6E5352ull) + 0x9E3779B97F4A7C15ull * (step + 1) +
               0xD1B54A32D192ED03ull * (tensor + 1));
}

// 64 random bits for elements 4 * group .. 4 * group + 3 (element 4g + k uses bits 16k..16k+15).
KILN_HOST_DEVICE std::uint64_t group_bits(std::uint64_t key, std::uint64_t group) {
  return mix64(key + 0x9E3779B97F4A7C15ull * (group + 1));
}

// bf16 bits of x rounded stochastically with the 16 random bits `r`.
KILN_HOST_DEVICE std::uint16_t round_bf16_bits(float x, std::uint32_t r) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7F800000u) == 0x7F800000u) {  // Inf or NaN
    if (bits & 0x007FFFFFu) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);  // quiet
    return static_cast<std::uint16_t>(bits >> 16);
  }
  bits += r & 0xFFFFu;
  return static_cast<std::uint16_t>(bits >> 16);
}

}  // namespace kiln::sr
