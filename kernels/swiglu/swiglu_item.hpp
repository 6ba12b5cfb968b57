// The work of one SwiGLU item (a run of kVec columns of one row), written once for the kernels (a
// __device__ function in swiglu.cu, over 16-byte register vectors) and for the CPU
// (tests/cpu/swiglu_layout_test.cpp runs it over host arrays through every item of a call, in
// place too, against the reference). `Run` holds kVec elements: load(const T*), at(e),
// store(T*, floats).
#pragma once

#include <cstdint>

#include "kernels/rope/rope_layout.hpp"
#include "kernels/swiglu/swiglu_math.hpp"

#if defined(__CUDACC__)
#define KILN_SWIGLU_ITEM __device__ __forceinline__
#define KILN_SWIGLU_UNROLL _Pragma("unroll")
#else
#define KILN_SWIGLU_ITEM inline
#define KILN_SWIGLU_UNROLL  // host compilers warn on the unknown pragma
#endif

namespace kiln::swiglu_math {

// out: (N, I) out; gu: (N, 2I). runs = I / kVec.
template <typename Run, int kVec, typename T, typename Index>
KILN_SWIGLU_ITEM void fwd_item(T* out, const T* gu, std::int64_t runs, std::int64_t I, Index item) {
  std::int64_t gate = 0, col = 0;
  rope_layout::swiglu_locate(item, runs, I, kVec, &gate, &col);
  Run g, u;
  g.load(gu + gate);
  u.load(gu + gate + I);
  float y[kVec];
  KILN_SWIGLU_UNROLL
  for (int e = 0; e < kVec; ++e)
    y[e] = fwd(g.at(e), u.at(e));
  g.store(out + col, y);
}

// dgu: (N, 2I) out, may be gu (every input of the item is read before its outputs are written);
// dout: (N, I); gu: (N, 2I).
template <typename Run, int kVec, typename T, typename Index>
KILN_SWIGLU_ITEM void bwd_item(T* dgu, const T* dout, const T* gu, std::int64_t runs,
                               std::int64_t I, Index item) {
  std::int64_t gate = 0, col = 0;
  rope_layout::swiglu_locate(item, runs, I, kVec, &gate, &col);
  Run g, u, d;
  g.load(gu + gate);
  u.load(gu + gate + I);
  d.load(dout + col);
  float dg[kVec], du[kVec];
  KILN_SWIGLU_UNROLL
  for (int e = 0; e < kVec; ++e)
    bwd(g.at(e), u.at(e), d.at(e), &dg[e], &du[e]);
  g.store(dgu + gate, dg);
  u.store(dgu + gate + I, du);
}

}  // namespace kiln::swiglu_math
