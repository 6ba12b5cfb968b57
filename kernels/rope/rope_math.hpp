// sin and cos of the rotary angle, for the kernels and (to test it) the host.
//
// Why not sincosf: its argument reduction for |a| > 105615 (Payne-Hanek) keeps a 28-byte array in
// local memory, which ptxas reports (and CI's -Werror refuses), and Llama 3.1's 128K context puts
// angles p * inv_freq[0] = p there. The angle here is an fp32 value with |a| < 2^31 (positions
// below 2^31, inv_freq <= 1), so a Cody-Waite reduction in double is exact enough everywhere:
// k = rint(a * 2/pi), r = a - k * pi/2 with pi/2 in two doubles (fused, so k * hi is exact; the
// neglected third part is under 1e-32 * k). r, rounded to fp32, lies in [-pi/4, pi/4], where
// Cephes' single-precision minimax polynomials give sin and cos within about 1 ulp; k's quadrant
// picks and signs them. Error against the exact sine and cosine of the fp32 angle: under 1e-7
// (about 1.5 ulp at 1; tests/cpu/rope_ref_test.cpp).
#pragma once

#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define KILN_ROPE_HD __host__ __device__ __forceinline__
#else
#define KILN_ROPE_HD inline
#endif

namespace kiln::rope_math {

KILN_ROPE_HD void sincos_angle(float a, float* s, float* c) {
  constexpr double kTwoOverPi = 0.63661977236758134308;
  constexpr double kPiOver2Hi = 1.5707963267948966192;     // fp64(pi/2)
  constexpr double kPiOver2Lo = 6.123233995736766036e-17;  // pi/2 - kPiOver2Hi
  const double x = a;
  const double k = rint(x * kTwoOverPi);
  const float r = static_cast<float>(fma(-k, kPiOver2Lo, fma(-k, kPiOver2Hi, x)));
  const float z = r * r;
  const float sp =
      fmaf(fmaf(fmaf(-1.9515295891e-4f, z, 8.3321608736e-3f), z, -1.6666654611e-1f), z * r, r);
  const float cp =
      fmaf(fmaf(fmaf(2.443315711809948e-5f, z, -1.388731625493765e-3f), z, 4.166664568298827e-2f),
           z * z, fmaf(-0.5f, z, 1.0f));
  // k is an integer below 2^31 in magnitude; its low two bits (two's complement) are the quadrant.
  const int q = static_cast<int>(static_cast<std::int64_t>(k) & 3);
  *s = (q & 1) ? cp : sp;
  *c = (q & 1) ? sp : cp;
  if (q == 1 || q == 2) *c = -*c;
  if (q >= 2) *s = -*s;
}

}  // namespace kiln::rope_math
