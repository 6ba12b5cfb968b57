// GELU (tanh approximation, GPT-2) forward and backward, bf16 and fp32: elementwise, two
// 16-byte vectors per thread, a scalar tail for n not a multiple of the vector.
//
//   0.5 x (1 + tanh(u)) = x * s with s = sigmoid(2u) = 1 / (1 + exp(-2u)), u = sqrt(2/pi)(x +
//   0.044715 x^3): the same function with no cancellation in 1 + tanh(u) for negative x, and
//   gelu'(x) = s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 x^2), with 1 - s = exp(-2u) s
//   where s is near 1.
// bf16 uses the fast exponential (its error is far below a bf16 ulp); fp32 the
// accurate ones.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/common/check.hpp"
#include "kernels/common/rows.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/gelu/gelu.hpp"

namespace kiln::dev::gelu {

constexpr int kThreads = 256;
constexpr int kVecsPerThread = 2;
constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr float kCubic = 0.044715f;

// exp(-2u) for the element x.
template <typename T>
__device__ __forceinline__ float exp_neg_2u(float x) {
  const float u = kSqrt2OverPi * fmaf(kCubic * x, x * x, x);
  if constexpr (std::is_same_v<T, bf16>) {
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
  if constexpr (std::is_same_v<T, bf16>) {
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

// y: (n) out; x: (n). y may be x.
template <typename T>
__global__ void __launch_bounds__(kThreads) gelu_fwd_kernel(T* y, const T* x, std::int64_t n) {
  constexpr int kPack = Vec16<T>::kSize;
  const std::int64_t vecs = n / kPack;
  const std::int64_t first =
      static_cast<std::int64_t>(blockIdx.x) * kThreads * kVecsPerThread + threadIdx.x;
  Vec16<T> v[kVecsPerThread];
#pragma unroll
  for (int u = 0; u < kVecsPerThread; ++u) {
    const std::int64_t i = first + u * kThreads;
    v[u] = i < vecs ? load16(x + i * kPack) : zero16<T>();
  }
#pragma unroll
  for (int u = 0; u < kVecsPerThread; ++u) {
    const std::int64_t i = first + u * kThreads;
    if (i < vecs) {
      float out[kPack];
#pragma unroll
      for (int e = 0; e < kPack; ++e)
        out[e] = gelu<T>(get(v[u], e));
      store16(y + i * kPack, make16<T>(out));
    }
  }
  if (blockIdx.x == 0) {
    for (std::int64_t i = vecs * kPack + threadIdx.x; i < n; i += kThreads)
      y[i] = from_float<T>(gelu<T>(to_float(x[i])));
  }
}

// dx: (n) out; dy, x: (n). dx may be dy.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gelu_bwd_kernel(T* dx, const T* dy, const T* x, std::int64_t n) {
  constexpr int kPack = Vec16<T>::kSize;
  const std::int64_t vecs = n / kPack;
  const std::int64_t first =
      static_cast<std::int64_t>(blockIdx.x) * kThreads * kVecsPerThread + threadIdx.x;
  Vec16<T> xv[kVecsPerThread], dyv[kVecsPerThread];
#pragma unroll
  for (int u = 0; u < kVecsPerThread; ++u) {
    const std::int64_t i = first + u * kThreads;
    xv[u] = i < vecs ? load16(x + i * kPack) : zero16<T>();
    dyv[u] = i < vecs ? load16(dy + i * kPack) : zero16<T>();
  }
#pragma unroll
  for (int u = 0; u < kVecsPerThread; ++u) {
    const std::int64_t i = first + u * kThreads;
    if (i < vecs) {
      float out[kPack];
#pragma unroll
      for (int e = 0; e < kPack; ++e)
        out[e] = gelu_grad<T>(get(xv[u], e), get(dyv[u], e));
      store16(dx + i * kPack, make16<T>(out));
    }
  }
  if (blockIdx.x == 0) {
    for (std::int64_t i = vecs * kPack + threadIdx.x; i < n; i += kThreads)
      dx[i] = from_float<T>(gelu_grad<T>(to_float(x[i]), to_float(dy[i])));
  }
}

// Blocks covering n elements (at least one, which also serves the tail).
template <typename T>
unsigned grid(std::int64_t n) {
  constexpr std::int64_t kPerBlock = std::int64_t{kThreads} * kVecsPerThread * Vec16<T>::kSize;
  return static_cast<unsigned>(std::max<std::int64_t>(1, (n + kPerBlock - 1) / kPerBlock));
}

}  // namespace kiln::dev::gelu

namespace kiln::impl {

void gelu_fwd(kiln_dtype_t dtype, void* y, const void* x, std::int64_t n, cudaStream_t stream) {
  using namespace dev::gelu;
  if (n == 0) return;
  if (dtype == KILN_DTYPE_BF16) {
    gelu_fwd_kernel<<<grid<dev::bf16>(n), kThreads, 0, stream>>>(
        static_cast<dev::bf16*>(y), static_cast<const dev::bf16*>(x), n);
  } else {
    gelu_fwd_kernel<<<grid<float>(n), kThreads, 0, stream>>>(static_cast<float*>(y),
                                                             static_cast<const float*>(x), n);
  }
  KILN_LAUNCH_CHECK(stream);
}

void gelu_bwd(kiln_dtype_t dtype, void* dx, const void* dy, const void* x, std::int64_t n,
              cudaStream_t stream) {
  using namespace dev::gelu;
  if (n == 0) return;
  if (dtype == KILN_DTYPE_BF16) {
    gelu_bwd_kernel<<<grid<dev::bf16>(n), kThreads, 0, stream>>>(
        static_cast<dev::bf16*>(dx), static_cast<const dev::bf16*>(dy),
        static_cast<const dev::bf16*>(x), n);
  } else {
    gelu_bwd_kernel<<<grid<float>(n), kThreads, 0, stream>>>(
        static_cast<float*>(dx), static_cast<const float*>(dy), static_cast<const float*>(x), n);
  }
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
