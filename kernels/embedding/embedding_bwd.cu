// Embedding backward, deterministic and free of float atomics.
//
// dwte: after embedding_sort.cu has sorted the occurrences by token (stably: positions ascending
// within a token), each token's occurrences form one run of the sorted arrays. A thread block
// takes sorted indices i in a grid-stride loop and works only where a run starts (keys[i] !=
// keys[i - 1]): it alone owns that vocabulary row, so it may read-modify-write dwte[v] without
// atomics. Threads of the block split the row's C / 8 packs; when C / 8 is smaller than the block,
// R = blockDim / (C / 8) row lanes split the run's rows (lane r takes rows r, r + R, ...) and their
// sums are added in lane order through shared memory. Every order is a function of the tokens,
// C and the block size only, so the result is bitwise reproducible.
//
// dwpe (when there is a position table): one thread per (position, pack) sums the batch in order
// b = 0..B-1.
#include <cuda_bf16.h>

#include <cstdint>

#include "errors/check.hpp"
#include "kernels/common/device.hpp"
#include "kernels/common/vec.cuh"
#include "kernels/embedding/embedding.hpp"

namespace kiln::impl {
namespace {

using dev::bf16;
using BPack = dev::Pack<bf16>;

constexpr int kThreads = 256;
constexpr int kBatch = 4;  // rows in flight per thread

__device__ __forceinline__ void add_pack(float (&acc)[8], const BPack& p) {
#pragma unroll
  for (int l = 0; l < 8; ++l)
    acc[l] += __bfloat162float(p.v[l]);
}

// dst[0:8] += acc, as two 16-byte read-modify-writes.
__device__ __forceinline__ void accumulate(float* dst, const float (&acc)[8]) {
  float4* d = reinterpret_cast<float4*>(dst);
  float4 lo = d[0], hi = d[1];
  lo.x += acc[0];
  lo.y += acc[1];
  lo.z += acc[2];
  lo.w += acc[3];
  hi.x += acc[4];
  hi.y += acc[5];
  hi.z += acc[6];
  hi.w += acc[7];
  d[0] = lo;
  d[1] = hi;
}

__global__ void __launch_bounds__(kThreads)
    embedding_bwd_wte_kernel(float* dwte, const bf16* dout, const uint32_t* keys,
                             const int32_t* positions, int M, int C, uint32_t V) {
  __shared__ __align__(16) float partial[kThreads * 8];  // (R, lanes, 8) row-lane sums
  const int packs = C / 8;
  const int lanes = packs < kThreads ? packs : kThreads;
  const int R = kThreads / lanes;
  const int r = threadIdx.x / lanes, q0 = threadIdx.x % lanes;
  for (int i = blockIdx.x; i < M; i += gridDim.x) {
    const uint32_t key = keys[i];
    if (key >= V) break;  // ids outside [0, V) were mapped to V and sorted last: nothing to add
    if (i > 0 && keys[i - 1] == key) continue;  // not the start of a run (uniform in the block)
    for (int q = q0; q < packs; q += lanes) {   // once when R > 1 (lanes == packs)
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      if (r < R) {
        // Rows i + r, i + r + R, ... while they belong to the run, kBatch loads in flight.
        bool more = true;
        for (int k0 = i + r; more; k0 += kBatch * R) {
          int pos[kBatch];
#pragma unroll
          for (int b = 0; b < kBatch; ++b) {
            const int k = k0 + b * R;
            pos[b] = k < M && keys[k] == key ? positions[k] : -1;
          }
          BPack g[kBatch];
#pragma unroll
          for (int b = 0; b < kBatch; ++b)
            if (pos[b] >= 0) g[b] = dev::load_pack(dout + int64_t{pos[b]} * C + 8 * q);
#pragma unroll
          for (int b = 0; b < kBatch; ++b)
            if (pos[b] >= 0) add_pack(acc, g[b]);
          more = pos[kBatch - 1] >= 0;  // a run is contiguous: a miss ends it
        }
      }
      float* dst = dwte + int64_t{key} * C + 8 * q;
      if (R == 1) {
        if (r == 0) accumulate(dst, acc);  // threads past lanes * R hold no rows
      } else {
        if (r < R) {
#pragma unroll
          for (int l = 0; l < 8; ++l)
            partial[(r * lanes + q) * 8 + l] = acc[l];
        }
        __syncthreads();
        if (r == 0) {
          for (int rr = 1; rr < R; ++rr) {
#pragma unroll
            for (int l = 0; l < 8; ++l)
              acc[l] += partial[(rr * lanes + q) * 8 + l];
          }
          accumulate(dst, acc);
        }
        __syncthreads();  // partial is reused by the next run
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    embedding_bwd_wpe_kernel(float* dwpe, const bf16* dout, int B, int T, int C) {
  const int packs = C / 8;
  const int lanes = packs < kThreads ? packs : kThreads;
  const int rows_per_step = kThreads / lanes;
  const int r = threadIdx.x / lanes, q0 = threadIdx.x % lanes;
  if (r >= rows_per_step) return;
  const int64_t batch_stride = int64_t{T} * C;
  for (int t = blockIdx.x * rows_per_step + r; t < T; t += gridDim.x * rows_per_step) {
    for (int q = q0; q < packs; q += lanes) {
      const bf16* g = dout + int64_t{t} * C + 8 * q;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int b0 = 0; b0 < B; b0 += kBatch) {
        BPack v[kBatch];
#pragma unroll
        for (int k = 0; k < kBatch; ++k)
          if (b0 + k < B) v[k] = dev::load_pack(g + (b0 + k) * batch_stride);
#pragma unroll
        for (int k = 0; k < kBatch; ++k)
          if (b0 + k < B) add_pack(acc, v[k]);
      }
      accumulate(dwpe + int64_t{t} * C + 8 * q, acc);
    }
  }
}

}  // namespace

void embedding_bwd(float* dwte, float* dwpe, const bf16* dout, const int32_t* tokens, int64_t B,
                   int64_t T, int64_t C, int64_t V, void* workspace,
                   const EmbeddingBwdWorkspace& layout, cudaStream_t stream) {
  const int64_t M = B * T;
  const int sms = current_device_facts().multiprocessors;
  const int64_t packs = C / 8;
  const int64_t rows_per_block = packs < kThreads ? kThreads / packs : 1;

  // dwpe first: it needs no sort. A model without a position table has none.
  if (dwpe) {
    const int64_t wpe_blocks = (T + rows_per_block - 1) / rows_per_block;
    embedding_bwd_wpe_kernel<<<static_cast<unsigned>(wpe_blocks < 65535 ? wpe_blocks : 65535),
                               kThreads, 0, stream>>>(dwpe, dout, static_cast<int>(B),
                                                      static_cast<int>(T), static_cast<int>(C));
    KILN_LAUNCH_CHECK(stream);
  }

  embedding_sort_tokens(workspace, layout, tokens, M, V, stream);
  const auto* base = static_cast<const unsigned char*>(workspace);
  const auto* keys = reinterpret_cast<const uint32_t*>(base + layout.keys_out);
  const auto* positions = reinterpret_cast<const int32_t*>(base + layout.values_out);
  // Most sorted indices are not run starts and cost a block one broadcast load each; 16 blocks
  // per SM keep enough runs in flight.
  const int64_t cap = int64_t{sms} * 16;
  embedding_bwd_wte_kernel<<<static_cast<unsigned>(M < cap ? M : cap), kThreads, 0, stream>>>(
      dwte, dout, keys, positions, static_cast<int>(M), static_cast<int>(C),
      static_cast<uint32_t>(V));
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
