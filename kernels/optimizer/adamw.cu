// Fused multi-tensor AdamW: one launch over every parameter tensor. A block takes one chunk of
// KILN_MULTI_TENSOR_CHUNK elements of one tensor (found by a binary search over the device
// table), each thread 4 consecutive elements at a time as 16-byte vectors of the fp32 master
// weights, moments and gradient, plus an 8-byte store of the bf16 copy. Everything is read and
// written once per step, far more than L2 holds: streaming (evict-first) accesses throughout.
// The clip scale is read from device memory, so nothing waits for the host.
#include <cuda_bf16.h>

#include <cstdint>

#include "errors/check.hpp"
#include "kernels/optimizer/multi_tensor.cuh"
#include "kernels/optimizer/optimizer.hpp"
#include "kernels/optimizer/stochastic_round.hpp"

namespace kiln::impl {
namespace {

constexpr int kThreads = 512;
constexpr int64_t kChunk = KILN_MULTI_TENSOR_CHUNK;
static_assert(kChunk % 8 == 0, "chunks keep 16-byte vectors aligned");

struct Args {
  const kiln_adamw_tensor_t* table;
  int count;
  int64_t total_chunks;
  AdamWScalars s;
  const float* grad_scale;
};

__device__ __forceinline__ void adamw_element(float& p, float& m, float& v, float g,
                                              const AdamWScalars& s, bool decay) {
  m = fmaf(s.beta1, m, s.one_minus_beta1 * g);
  v = fmaf(s.beta2, v, s.one_minus_beta2 * g * g);
  const float m_hat = m * s.inv_bias_correction1;
  const float v_hat = v * s.inv_bias_correction2;
  float update = m_hat / (sqrtf(v_hat) + s.eps);
  if (decay) update = fmaf(s.weight_decay, p, update);
  p = fmaf(-s.lr, update, p);
}

__device__ __forceinline__ uint16_t to_bf16_bits(float x, bool stochastic, uint64_t bits, int k) {
  if (stochastic) return sr::round_bf16_bits(x, static_cast<uint32_t>(bits >> (16 * k)));
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(const Args a) {
  // The verdict on this step was written on the device by an earlier kernel of the same stream.
  if (a.s.skip && *a.s.skip != 0) return;
  const float scale = a.grad_scale ? *a.grad_scale : 1.0f;
  const AdamWScalars& s = a.s;
  const bool stochastic = s.stochastic_rounding != 0;
  for (int64_t c = blockIdx.x; c < a.total_chunks; c += gridDim.x) {
    const int t = dev::find_chunk_tensor(a.table, a.count, c);
    const kiln_adamw_tensor_t e = a.table[t];
    const int64_t begin = (c - e.chunk_begin) * kChunk;
    const int64_t rest = e.n - begin;
    const int len = static_cast<int>(rest < kChunk ? rest : kChunk);
    if (len <= 0) continue;  // only with a table whose total is larger than prepared
    float* master = e.master + begin;
    float* m = e.m + begin;
    float* v = e.v + begin;
    const float* grad = e.grad + begin;
    uint16_t* param = e.param ? static_cast<uint16_t*>(e.param) + begin : nullptr;
    const bool decay = e.decay != 0;
    const uint64_t key = stochastic ? sr::stream_key(s.seed, s.step, static_cast<uint64_t>(t)) : 0;
    // 4-element groups, two per thread in flight (the stores of one group would otherwise keep
    // the compiler from loading the next before them: it cannot know the tensors are disjoint).
    const int groups = len / 4;
    auto bits_of = [&](int group) {
      return stochastic ? sr::group_bits(key, static_cast<uint64_t>(begin / 4 + group)) : 0;
    };
    for (int k = threadIdx.x; k < groups; k += 2 * kThreads) {
      const int k2 = k + kThreads;
      const bool two = k2 < groups;
      float4 p[2], mm[2], vv[2], g[2];
      p[0] = __ldcs(reinterpret_cast<const float4*>(master) + k);
      mm[0] = __ldcs(reinterpret_cast<const float4*>(m) + k);
      vv[0] = __ldcs(reinterpret_cast<const float4*>(v) + k);
      g[0] = __ldcs(reinterpret_cast<const float4*>(grad) + k);
      if (two) {
        p[1] = __ldcs(reinterpret_cast<const float4*>(master) + k2);
        mm[1] = __ldcs(reinterpret_cast<const float4*>(m) + k2);
        vv[1] = __ldcs(reinterpret_cast<const float4*>(v) + k2);
        g[1] = __ldcs(reinterpret_cast<const float4*>(grad) + k2);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (h == 1 && !two) break;
        const int kk = h == 0 ? k : k2;
        adamw_element(p[h].x, mm[h].x, vv[h].x, g[h].x * scale, s, decay);
        adamw_element(p[h].y, mm[h].y, vv[h].y, g[h].y * scale, s, decay);
        adamw_element(p[h].z, mm[h].z, vv[h].z, g[h].z * scale, s, decay);
        adamw_element(p[h].w, mm[h].w, vv[h].w, g[h].w * scale, s, decay);
        __stcs(reinterpret_cast<float4*>(master) + kk, p[h]);
        __stcs(reinterpret_cast<float4*>(m) + kk, mm[h]);
        __stcs(reinterpret_cast<float4*>(v) + kk, vv[h]);
        if (param) {
          const uint64_t bits = bits_of(kk);
          const uint32_t lo = to_bf16_bits(p[h].x, stochastic, bits, 0) |
                              (uint32_t{to_bf16_bits(p[h].y, stochastic, bits, 1)} << 16);
          const uint32_t hi = to_bf16_bits(p[h].z, stochastic, bits, 2) |
                              (uint32_t{to_bf16_bits(p[h].w, stochastic, bits, 3)} << 16);
          __stcs(reinterpret_cast<uint2*>(param) + kk, make_uint2(lo, hi));
        }
      }
    }
    // The last len % 4 elements, one per thread.
    for (int i = 4 * groups + static_cast<int>(threadIdx.x); i < len; i += kThreads) {
      float p = master[i], mk = m[i], vk = v[i];
      adamw_element(p, mk, vk, grad[i] * scale, s, decay);
      master[i] = p;
      m[i] = mk;
      v[i] = vk;
      if (param) param[i] = to_bf16_bits(p, stochastic, bits_of(i / 4), i % 4);
    }
  }
}

}  // namespace

void adamw_step(const kiln_adamw_tensor_t* tensors, int count, int64_t total_chunks,
                const AdamWScalars& scalars, const float* grad_scale, cudaStream_t stream) {
  Args a;
  a.table = tensors;
  a.count = count;
  a.total_chunks = total_chunks;
  a.s = scalars;
  a.grad_scale = grad_scale;
  // One block per chunk: the hardware balances the blocks, the loop above only guards the grid.
  const int64_t blocks = total_chunks < 0x7FFFFFFF ? total_chunks : 0x7FFFFFFF;
  adamw_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
