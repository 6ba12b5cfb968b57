// SwiGLU's per-element arithmetic in fp32, host and device: the kernels' math, which
// tests/cpu/swiglu_ref_test.cpp checks on the CPU against the double reference, extremes included.
//
// sigmoid(g) = 1 / (1 + e), e = exp(-g): e = inf gives 0 and e = 0 gives 1, so no finite g makes
// a NaN. The accurate expf and an IEEE division (correctly rounded; the kernels are memory-bound).
// 1 - sigmoid is taken as e * sigmoid = e / (1 + e) where sigmoid >= 1/2 (there e <= 1, so no
// inf * 0), and as 1 - sigmoid below, so it has no cancellation for large g.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define KILN_SWIGLU_HD __host__ __device__ __forceinline__
#else
#define KILN_SWIGLU_HD inline
#endif

namespace kiln::swiglu_math {

// silu(g) * up
KILN_SWIGLU_HD float fwd(float g, float up) {
  const float s = 1.0f / (1.0f + expf(-g));
  return g * s * up;
}

// d gate = dy * up * silu'(g), d up = dy * silu(g); silu'(g) = s (1 + g (1 - s)).
KILN_SWIGLU_HD void bwd(float g, float up, float dy, float* dgate, float* dup) {
  const float e = expf(-g);
  const float s = 1.0f / (1.0f + e);
  const float one_minus_s = s < 0.5f ? 1.0f - s : e * s;
  *dgate = dy * up * (s * fmaf(g, one_minus_s, 1.0f));
  *dup = dy * (g * s);
}

}  // namespace kiln::swiglu_math
