// The few kernels the runtime itself needs around the ops: the master -> bf16 copy of the
// weights, the deterministic loss sum, and the step statistics the optimizer guard reads.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "errors/check.hpp"
#include "runtime/cuda/runtime_kernels.hpp"

namespace kiln::impl {
namespace {

__global__ void f32_to_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride) {
    dst[i] = __float2bfloat16_rn(src[i]);
  }
}

constexpr int kSumThreads = 512;

// One block: each thread sums a strided slice in double in index order, then a fixed tree over
// the threads; the result does not depend on timing or on the device.
__global__ void accumulate_loss_kernel(double* sum, const float* losses, int64_t n, double scale) {
  __shared__ double partial[kSumThreads];
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += kSumThreads)
    s += static_cast<double>(losses[i]);
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int width = kSumThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) *sum += scale * partial[0];
}

__global__ void finalize_stats_kernel(double* stats, const float* norm_out, int32_t* skipped) {
  const double norm = static_cast<double>(norm_out[0]);
  const bool skip = !isfinite(norm) || !isfinite(stats[kStatLoss]);
  stats[kStatGradNorm] = norm;
  stats[kStatSkipped] = skip ? 1.0 : 0.0;
  *skipped = skip ? 1 : 0;
}

__global__ void sum_squares_from_norm_kernel(double* stats, const float* norm_out) {
  const double norm = static_cast<double>(norm_out[0]);
  stats[kStatGradNorm] = norm * norm;
}

__global__ void norm_from_sum_squares_kernel(float* norm_out, const double* stats, float max_norm) {
  const double norm = sqrt(stats[kStatGradNorm]);
  double scale = 1.0;
  if (max_norm > 0) {
    const double c = static_cast<double>(max_norm) / (norm + 1e-6);
    scale = (c < 1.0 || isnan(c)) ? c : 1.0;  // a NaN norm propagates into the update
  }
  norm_out[0] = static_cast<float>(norm);
  norm_out[1] = static_cast<float>(scale);
}

}  // namespace

void launch_f32_to_bf16(void* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 4096);
  f32_to_bf16_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      static_cast<__nv_bfloat16*>(dst), src, n);
  KILN_LAUNCH_CHECK(stream);
}

void launch_accumulate_loss(double* sum, const float* losses, int64_t n, double scale,
                            cudaStream_t stream) {
  accumulate_loss_kernel<<<1, kSumThreads, 0, stream>>>(sum, losses, n, scale);
  KILN_LAUNCH_CHECK(stream);
}

void launch_finalize_stats(double* stats, const float* norm_out, int32_t* skipped,
                           cudaStream_t stream) {
  finalize_stats_kernel<<<1, 1, 0, stream>>>(stats, norm_out, skipped);
  KILN_LAUNCH_CHECK(stream);
}

void launch_sum_squares_from_norm(double* stats, const float* norm_out, cudaStream_t stream) {
  sum_squares_from_norm_kernel<<<1, 1, 0, stream>>>(stats, norm_out);
  KILN_LAUNCH_CHECK(stream);
}

void launch_norm_from_sum_squares(float* norm_out, const double* stats, float max_norm,
                                  cudaStream_t stream) {
  norm_from_sum_squares_kernel<<<1, 1, 0, stream>>>(norm_out, stats, max_norm);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
