// The global gradient norm in two deterministic stages. Stage 1: one block per chunk of
// KILN_MULTI_TENSOR_CHUNK elements sums its squares in fp32 (each thread a fixed strided subset,
// then the fixed block tree of reduce.cuh) into partials[chunk]. Stage 2: one block sums the
// partials in double (thread i takes chunks i, i + 1024, ...; a fixed butterfly; warps in order),
// takes the square root and derives the clip scale. The orders depend only on the chunking, so
// the result is the same bit for bit on every run and device, and it never leaves the device.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "errors/check.hpp"
#include "kernels/common/reduce.cuh"
#include "kernels/optimizer/multi_tensor.cuh"
#include "kernels/optimizer/optimizer.hpp"

namespace kiln::impl {
namespace {

constexpr int kThreads = 512;
constexpr int kFinalThreads = 1024;
constexpr int64_t kChunk = KILN_MULTI_TENSOR_CHUNK;

__global__ void __launch_bounds__(kThreads)
    global_norm_partial_kernel(float* partials, const kiln_norm_tensor_t* table, int count,
                               int64_t total_chunks) {
  __shared__ float scratch[kThreads / 32];
  for (int64_t c = blockIdx.x; c < total_chunks; c += gridDim.x) {
    const int t = dev::find_chunk_tensor(table, count, c);
    const kiln_norm_tensor_t e = table[t];
    const int64_t begin = (c - e.chunk_begin) * kChunk;
    const int64_t rest = e.n - begin;
    const int len = static_cast<int>(rest < kChunk ? (rest > 0 ? rest : 0) : kChunk);
    const float* x = e.data + begin;
    float acc = 0.0f;
    const int vecs = len / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 4
    for (int k = threadIdx.x; k < vecs; k += kThreads) {  // loads of 4 iterations in flight
      const float4 v = __ldcs(x4 + k);
      acc = fmaf(v.x, v.x, acc);
      acc = fmaf(v.y, v.y, acc);
      acc = fmaf(v.z, v.z, acc);
      acc = fmaf(v.w, v.w, acc);
    }
    for (int i = 4 * vecs + static_cast<int>(threadIdx.x); i < len; i += kThreads)
      acc = fmaf(x[i], x[i], acc);
    const float sum = dev::block_sum<kThreads>(acc, scratch);
    if (threadIdx.x == 0) partials[c] = sum;
  }
}

__global__ void __launch_bounds__(kFinalThreads)
    global_norm_finalize_kernel(float* out, const float* partials, int64_t total_chunks,
                                float max_norm) {
  __shared__ double warp_sums[kFinalThreads / 32];
  double acc = 0;
  for (int64_t c = threadIdx.x; c < total_chunks; c += kFinalThreads)
    acc += double(partials[c]);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    acc += __shfl_xor_sync(dev::kFullMask, acc, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int w = 0; w < kFinalThreads / 32; ++w)
      total += warp_sums[w];
    const double norm = sqrt(total);
    double scale = 1.0;
    if (max_norm > 0) {
      const double c = double(max_norm) / (norm + 1e-6);
      scale = (c < 1.0 || isnan(c)) ? c : 1.0;  // a NaN norm propagates into the update
    }
    out[0] = static_cast<float>(norm);
    out[1] = static_cast<float>(scale);
  }
}

}  // namespace

void global_norm(float* out, const kiln_norm_tensor_t* tensors, int count, int64_t total_chunks,
                 float max_norm, float* partials, cudaStream_t stream) {
  if (total_chunks > 0) {
    const int64_t blocks = total_chunks < 0x7FFFFFFF ? total_chunks : 0x7FFFFFFF;
    global_norm_partial_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        partials, tensors, count, total_chunks);
    KILN_LAUNCH_CHECK(stream);
  }
  global_norm_finalize_kernel<<<1, kFinalThreads, 0, stream>>>(out, partials, total_chunks,
                                                               max_norm);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
