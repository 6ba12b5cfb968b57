// The mean loss over the rows that are not ignored: one block of 1024 threads, each summing a
// fixed strided subset of rows in double, then a fixed butterfly and a fixed order over warps.
// The order depends only on N, so the result is bitwise the same on every run and every device;
// one block is ample for the N of a training step (it reads 8 bytes a row).
#include <cuda_runtime.h>

#include <cstdint>

#include "errors/check.hpp"
#include "kernels/classifier/classifier.hpp"
#include "kernels/common/reduce.cuh"

namespace kiln::impl {
namespace {

constexpr int kThreads = 1024;
constexpr int kUnroll = 8;  // independent loads in flight per thread

__global__ void __launch_bounds__(kThreads)
    classifier_mean_loss_kernel(float* mean, const float* losses, const int32_t* targets, int64_t N,
                                int32_t ignore_index) {
  __shared__ double red_sum[32];
  __shared__ long long red_count[32];
  double sum = 0;
  long long count = 0;
  for (int64_t r0 = threadIdx.x; r0 < N; r0 += int64_t{kThreads} * kUnroll) {
    float l[kUnroll];
    int32_t t[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t r = r0 + int64_t{k} * kThreads;
      t[k] = r < N ? targets[r] : ignore_index;
      l[k] = r < N ? losses[r] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (t[k] != ignore_index) {
        sum += double(l[k]);
        ++count;
      }
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    sum += __shfl_xor_sync(dev::kFullMask, sum, offset);
    count += __shfl_xor_sync(dev::kFullMask, count, offset);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    red_sum[warp] = sum;
    red_count[warp] = count;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    long long n = 0;
    for (int w = 0; w < kThreads / 32; ++w) {
      total += red_sum[w];
      n += red_count[w];
    }
    mean[0] = n ? static_cast<float>(total / double(n)) : 0.0f;
  }
}

}  // namespace

void classifier_mean_loss(float* mean, const float* losses, const int32_t* targets, int64_t N,
                          int32_t ignore_index, cudaStream_t stream) {
  classifier_mean_loss_kernel<<<1, kThreads, 0, stream>>>(mean, losses, targets, N, ignore_index);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
