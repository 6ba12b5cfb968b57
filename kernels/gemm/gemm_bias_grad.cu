// dst += src over a vector: the accumulation step of cuBLASLt's bias gradient (which cuBLASLt
// writes rather than adds). Element-wise, so deterministic.
#include <cuda_bf16.h>

#include "kernels/common/check.hpp"
#include "kernels/gemm/gemm.hpp"

namespace kiln::impl {
namespace {

template <typename T>
__global__ void bias_grad_accumulate_kernel(T* dst, const T* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    if constexpr (sizeof(T) == 4) {
      dst[i] += src[i];
    } else {
      dst[i] = __float2bfloat16_rn(__bfloat162float(dst[i]) + __bfloat162float(src[i]));
    }
  }
}

}  // namespace

void bias_grad_accumulate(void* dst, const void* src, std::int64_t n, bool f32,
                          cudaStream_t stream) {
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<std::int64_t>((n + threads - 1) / threads, 1024));
  if (f32) {
    bias_grad_accumulate_kernel<<<blocks, threads, 0, stream>>>(static_cast<float*>(dst),
                                                                static_cast<const float*>(src), n);
  } else {
    bias_grad_accumulate_kernel<<<blocks, threads, 0, stream>>>(
        static_cast<__nv_bfloat16*>(dst), static_cast<const __nv_bfloat16*>(src), n);
  }
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
