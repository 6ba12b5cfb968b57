// GELU (tanh approximation, GPT-2) forward and backward, bf16 and fp32: elementwise, two
// 16-byte vectors per thread, a scalar tail for n not a multiple of the vector. The math (in the
// cancellation-free sigmoid form) is kernels/common/gelu_math.cuh, which the GEMM epilogues share.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "errors/check.hpp"
#include "kernels/common/gelu_math.cuh"
#include "kernels/common/rows.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/gelu/gelu.hpp"

namespace kiln::dev::gelu {

constexpr int kThreads = 256;
constexpr int kVecsPerThread = 2;
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
