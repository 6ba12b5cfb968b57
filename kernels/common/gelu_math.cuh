// GELU's tanh approximation (GPT-2) as device math, shared by the standalone GELU kernels and
// the GEMM epilogues so that the library has one GELU:
//
//   0.5 x (1 + tanh(u)) = x * s with s = sigmoid(2u) = 1 / (1 + exp(-2u)), u = sqrt(2/pi)(x +
//   0.044715 x^3): the same function with no cancellation in 1 + tanh(u) for negative x, and
//   gelu'(x) = s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 x^2), with 1 - s = exp(-2u) s
//   where s is near 1.
// T = bf16 (outputs rounded to bf16) uses the fast exponential and reciprocal, whose errors are
// far below a bf16 ulp; T = float the accurate ones.
#pragma once

#include <cuda_bf16.h>

#include <type_traits>

namespace kiln::dev::gelu {

constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr float kCubic = 0.044715f;

// exp(-2u) for the element x.
template <typename T>
__device__ __forceinline__ float exp_neg_2u(float x) {
  const float u = kSqrt2OverPi * fmaf(kCubic * x, x * x, x);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __expf(-2.0f * u);
  } else {
    return expf(-2.0f * u);
  }
}
// 1 / (1 + e), exact at e = 0 and 0 at e = inf (unlike __fdividef). 1 + e >= 1, so bf16 can
// take the hardware approximation (1 ulp; PTX: rcp.approx(+inf) = +0), which needs none of the
// correctly rounded reciprocal's slow path.
template <typename T>
__device__ __forceinline__ float sigmoid_of(float e) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + e));
    return r;
  } else {
    return __frcp_rn(1.0f + e);
  }
}

template <typename T>
__device__ __forceinline__ float gelu(float x) {
  return x * sigmoid_of<T>(exp_neg_2u<T>(x));
}

template <typename T>
__device__ __forceinline__ float gelu_grad(float x, float dy) {
  const float e = exp_neg_2u<T>(x);
  const float s = sigmoid_of<T>(e);
  // 1 - s without cancellation: e * s where s is near 1 (e <= 1 there, so no inf * 0).
  const float q = s * (s < 0.5f ? 1.0f - s : e * s);  // s (1 - s) = (1 - tanh^2) / 4
  const float du = kSqrt2OverPi * fmaf(3.0f * kCubic * x, x, 1.0f);
  // Past |x| ~ 1e19, x^2 overflows du where q is exactly 0: the term is 0 there, as in the
  // reference (in double); at x = +-inf it stays NaN (inf * 0), as in the reference.
  const float tail = q == 0.0f && fabsf(x) != INFINITY ? 0.0f : 2.0f * x * q * du;
  return dy * (s + tail);
}

}  // namespace kiln::dev::gelu
