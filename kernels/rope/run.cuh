// kVec elements of T in registers, the unit the rope and SwiGLU kernels move: one 16-byte vector
// (kept as 32-bit words, rows.cuh: Vec16) or one element. The item code (rope_item.hpp,
// swiglu_item.hpp) is written over this interface, which the CPU tests implement on host arrays.
#pragma once

#include "kernels/common/rows.cuh"
#include "kernels/common/vec.cuh"

namespace kiln::dev {

template <typename T, int kVec>
struct Run {
  static_assert(kVec == Vec16<T>::kSize, "a run is one 16-byte vector or one element");
  Vec16<T> v;
  __device__ __forceinline__ void load(const T* p) { v = load16(p); }
  __device__ __forceinline__ float at(int e) const { return get(v, e); }
  __device__ __forceinline__ void store(T* p, const float (&f)[kVec]) const {
    store16(p, make16<T>(f));
  }
};
template <typename T>
struct Run<T, 1> {
  T v;
  __device__ __forceinline__ void load(const T* p) { v = *p; }
  __device__ __forceinline__ float at(int) const { return to_float(v); }
  __device__ __forceinline__ void store(T* p, const float (&f)[1]) const {
    *p = from_float<T>(f[0]);
  }
};

}  // namespace kiln::dev
