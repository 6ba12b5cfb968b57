// The cuBLASLt backend's bias-gradient helpers, all deterministic (fixed summation orders, no
// atomics):
//  - bias_grad_accumulate: dst += src, the accumulation step after cuBLASLt's BGRADB epilogue
//    (which writes the vector rather than adding to it);
//  - op_a_row_sums_accumulate: bias_grad[m] += sum_k op(A)[m, k] computed on its own, for the
//    problems where cuBLASLt has no BGRADB algorithm (it then runs the plain GEMM).
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/common/reduce.cuh"

#include "errors/check.hpp"
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

template <typename T>
__device__ __forceinline__ void add_to(T* dst, float s) {
  if constexpr (sizeof(T) == 4) {
    *dst += s;
  } else {
    *dst = __float2bfloat16_rn(__bfloat162float(*dst) + s);
  }
}

// A (M, K) row-major: one warp per row, lanes striding over k, then the fixed butterfly.
template <typename T>
__global__ void row_sums_kernel(T* bias_grad, const __nv_bfloat16* a, std::int64_t lda,
                                std::int64_t M, std::int64_t K) {
  const std::int64_t row = blockIdx.x * std::int64_t{blockDim.x / 32} + threadIdx.x / 32;
  if (row >= M) return;
  const int lane = threadIdx.x % 32;
  float s = 0.0f;
  for (std::int64_t k = lane; k < K; k += 32)
    s += __bfloat162float(a[row * lda + k]);
  s = dev::warp_sum(s);
  if (lane == 0) add_to(bias_grad + row, s);
}

// A (K, M) row-major, column sums. Block (64 columns, one slice of rows): lane l sums columns
// 2 l, 2 l + 1 over rows warp, warp + 8, ... of the slice; the 8 warps combine in a fixed order.
// With one slice the block adds to bias_grad; otherwise it writes partial[slice][col] and
// column_partials_kernel adds the slices in order.
template <typename T>
__global__ void column_sums_kernel(T* bias_grad, float* partial, const __nv_bfloat16* a,
                                   std::int64_t lda, std::int64_t M, std::int64_t K,
                                   std::int64_t rows_per_slice) {
  __shared__ float part[8][64];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const std::int64_t col = blockIdx.x * std::int64_t{64} + 2 * lane;
  const std::int64_t r0 = blockIdx.y * rows_per_slice;
  const std::int64_t r1 = std::min(K, r0 + rows_per_slice);
  float s0 = 0.0f, s1 = 0.0f;
  for (std::int64_t r = r0 + warp; r < r1; r += 8) {
    const __nv_bfloat16* row = a + r * lda + col;
    if (col < M) s0 += __bfloat162float(row[0]);
    if (col + 1 < M) s1 += __bfloat162float(row[1]);
  }
  part[warp][2 * lane] = s0;
  part[warp][2 * lane + 1] = s1;
  __syncthreads();
  if (threadIdx.x < 64) {
    const std::int64_t c = blockIdx.x * std::int64_t{64} + threadIdx.x;
    if (c < M) {
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < 8; ++w)
        s += part[w][threadIdx.x];
      if (gridDim.y == 1)
        add_to(bias_grad + c, s);
      else
        partial[blockIdx.y * M + c] = s;
    }
  }
}

template <typename T>
__global__ void column_partials_kernel(T* bias_grad, const float* partial, std::int64_t M,
                                       int slices) {
  const std::int64_t c = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (c >= M) return;
  float s = 0.0f;
  for (int i = 0; i < slices; ++i)
    s += partial[i * M + c];
  add_to(bias_grad + c, s);
}

template <typename T>
void row_sums(T* bias_grad, const __nv_bfloat16* a, bool trans_a, std::int64_t lda, std::int64_t M,
              std::int64_t K, float* scratch, std::size_t scratch_bytes, int multiprocessors,
              cudaStream_t stream) {
  if (!trans_a) {
    const unsigned blocks = static_cast<unsigned>((M + 7) / 8);
    row_sums_kernel<<<blocks, 256, 0, stream>>>(bias_grad, a, lda, M, K);
    KILN_LAUNCH_CHECK(stream);
    return;
  }
  // Enough row slices for about two blocks per SM, as the scratch allows.
  const std::int64_t col_blocks = (M + 63) / 64;
  std::int64_t slices = std::max<std::int64_t>(1, 2 * multiprocessors / col_blocks);
  slices = std::min<std::int64_t>(
      {slices, (K + 255) / 256, 64, static_cast<std::int64_t>(scratch_bytes / (4 * M))});
  slices = std::max<std::int64_t>(slices, 1);
  const std::int64_t rows_per_slice = (K + slices - 1) / slices;
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(slices));
  column_sums_kernel<<<grid, 256, 0, stream>>>(bias_grad, scratch, a, lda, M, K, rows_per_slice);
  KILN_LAUNCH_CHECK(stream);
  if (slices > 1) {
    column_partials_kernel<<<static_cast<unsigned>((M + 255) / 256), 256, 0, stream>>>(
        bias_grad, scratch, M, static_cast<int>(slices));
    KILN_LAUNCH_CHECK(stream);
  }
}

}  // namespace

void op_a_row_sums_accumulate(void* bias_grad, bool f32, const void* a, bool trans_a,
                              std::int64_t lda, std::int64_t M, std::int64_t K, void* scratch,
                              std::size_t scratch_bytes, int multiprocessors, cudaStream_t stream) {
  const auto* ab = static_cast<const __nv_bfloat16*>(a);
  float* sc = static_cast<float*>(scratch);
  if (f32)
    row_sums(static_cast<float*>(bias_grad), ab, trans_a, lda, M, K, sc, scratch_bytes,
             multiprocessors, stream);
  else
    row_sums(static_cast<__nv_bfloat16*>(bias_grad), ab, trans_a, lda, M, K, sc, scratch_bytes,
             multiprocessors, stream);
}

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
