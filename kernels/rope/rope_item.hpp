// The work of one rotary work item, written once for the kernels (a __device__ function in
// rope.cu, over 16-byte register vectors) and for the CPU (tests/cpu/rope_layout_test.cpp runs it
// over host arrays through every item of a call, as the kernel's grid-stride loop would, and
// checks the result against the reference).
//
// `Run` holds kVec elements in registers: load(const T*), at(e) as float, store(T*, floats).
#pragma once

#include <math.h>

#include <cstdint>

#include "kernels/rope/rope_layout.hpp"
#include "kernels/rope/rope_math.hpp"

#if defined(__CUDACC__)
#define KILN_ROPE_ITEM __device__ __forceinline__
#define KILN_ROPE_UNROLL _Pragma("unroll")
#else
#define KILN_ROPE_ITEM inline
#define KILN_ROPE_UNROLL  // host compilers warn on the unknown pragma
#endif

namespace kiln::rope_layout {

// x: the call's (B, T, H, HD) tensor; inv_freq: (HD / 2) fp32; item < g.total.
template <typename Run, int kVec, bool kTranspose, typename T, typename Index>
KILN_ROPE_ITEM void rope_item(T* x, const RopeGrid& g, const float* inv_freq, int pos_offset,
                              Index item) {
  const RopeItem it = locate(g, item, kVec);
  const int hd = g.head_dim, half = hd / 2, heads = it.heads;
  T* base = x + it.offset;
  // Loads first: the sines and cosines below are computed while they are in flight.
  Run lo[kHeads], hi[kHeads];
  KILN_ROPE_UNROLL
  for (int u = 0; u < kHeads; ++u) {
    if (u < heads) {
      lo[u].load(base + u * hd);
      hi[u].load(base + u * hd + half);
    }
  }

  // fp32(p) * inv_freq in fp32, as Hugging Face computes the angle; its sine and cosine accurate
  // for every angle positions below 2^31 give (rope_math.hpp).
  const float pos = static_cast<float>(pos_offset + static_cast<int>(it.t));
  float c[kVec], s[kVec];
  KILN_ROPE_UNROLL
  for (int e = 0; e < kVec; ++e) {
    rope_math::sincos_angle(pos * inv_freq[it.run * kVec + e], &s[e], &c[e]);
    if constexpr (kTranspose) s[e] = -s[e];
  }
  KILN_ROPE_UNROLL
  for (int u = 0; u < kHeads; ++u) {
    if (u < heads) {
      float y1[kVec], y2[kVec];
      KILN_ROPE_UNROLL
      for (int e = 0; e < kVec; ++e) {
        const float x1 = lo[u].at(e), x2 = hi[u].at(e);
        y1[e] = fmaf(x1, c[e], -x2 * s[e]);
        y2[e] = fmaf(x2, c[e], x1 * s[e]);
      }
      lo[u].store(base + u * hd, y1);
      hi[u].store(base + u * hd + half, y2);
    }
  }
}

}  // namespace kiln::rope_layout
