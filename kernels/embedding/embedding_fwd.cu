// Embedding forward: out[b, t, :] = wte[token, :] + wpe[t, :], or wte[token, :] alone for a model
// without a position table (rotary models), 16 bytes (8 channels) a thread.
// Threads of a row cover its C / 8 packs (a block holds several rows when C is small), so both
// gathers are contiguous 16-byte loads. Both tables stay in L2 as far as it holds them (a token or
// a position repeats across the batch); the output is read soon by the next layer, so it is
// stored normally too.
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

// kPositions: add wpe's row t; without, the token's row is copied bit for bit.
template <bool kPositions>
__global__ void __launch_bounds__(kThreads)
    embedding_fwd_kernel(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe,
                         int64_t M, int T, int C, int V) {
  const int packs = C / 8;
  const int lanes = packs < kThreads ? packs : kThreads;  // threads per row
  const int rows_per_step = kThreads / lanes;
  const int r = threadIdx.x / lanes, q0 = threadIdx.x % lanes;
  if (r >= rows_per_step) return;
  for (int64_t row = int64_t{blockIdx.x} * rows_per_step + r; row < M;
       row += int64_t{gridDim.x} * rows_per_step) {
    const int32_t token = tokens[row];
    const int t = static_cast<int>(row % T);
    const bool valid = token >= 0 && token < V;
    const bf16* e = wte + int64_t{valid ? token : 0} * C;
    const bf16* p = kPositions ? wpe + int64_t{t} * C : nullptr;
    bf16* o = out + row * C;
    for (int q = q0; q < packs; q += lanes) {
      BPack y;
      if (valid && kPositions) {
        const BPack a = dev::load_pack(e + 8 * q), b = dev::load_pack(p + 8 * q);
#pragma unroll
        for (int l = 0; l < 8; ++l)
          y.v[l] = __float2bfloat16_rn(__bfloat162float(a.v[l]) + __bfloat162float(b.v[l]));
      } else if (valid) {
        y = dev::load_pack(e + 8 * q);
      } else {
#pragma unroll
        for (int l = 0; l < 8; ++l)
          y.v[l] = __ushort_as_bfloat16(0x7FC0);  // NaN: a bad id shows in the loss
      }
      dev::store_pack(o + 8 * q, y);
    }
  }
}

}  // namespace

void embedding_fwd(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe, int64_t B,
                   int64_t T, int64_t C, int64_t V, cudaStream_t stream) {
  const int64_t M = B * T;
  const int64_t packs = C / 8;
  const int64_t rows_per_block = packs < kThreads ? kThreads / packs : 1;
  const int64_t wanted = (M + rows_per_block - 1) / rows_per_block;
  const int64_t cap = int64_t{current_device_facts().multiprocessors} * 32;
  const unsigned blocks = static_cast<unsigned>(wanted < cap ? wanted : cap);
  auto kernel = wpe ? embedding_fwd_kernel<true> : embedding_fwd_kernel<false>;
  kernel<<<blocks, kThreads, 0, stream>>>(out, tokens, wte, wpe, M, static_cast<int>(T),
                                          static_cast<int>(C), static_cast<int>(V));
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
