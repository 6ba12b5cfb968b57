// The `Run` the kernels' item code (rope_item.hpp, swiglu_item.hpp) takes, on the host: kVec
// elements held as floats, loaded from and stored to host arrays, bf16 emulated by rounding each
// stored value (kBf16). The layout tests run the kernels' own item code through it.
#pragma once

#include <cuda_bf16.h>

namespace kiln::test {

template <int kVec, bool kBf16>
struct HostRun {
  float v[kVec] = {};  // initialized: GCC cannot see that every read follows a load
  void load(const float* p) {
    for (int e = 0; e < kVec; ++e)
      v[e] = p[e];
  }
  float at(int e) const { return v[e]; }
  void store(float* p, const float (&f)[kVec]) const {
    for (int e = 0; e < kVec; ++e)
      p[e] = kBf16 ? __bfloat162float(__float2bfloat16_rn(f[e])) : f[e];
  }
};

}  // namespace kiln::test
