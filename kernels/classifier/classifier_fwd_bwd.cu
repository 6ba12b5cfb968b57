// The fused classifier kernel: one thread block per row of logits. The row is read from memory
// once, computing the online max and sum of exponentials per thread, then each gradient is
// written once; the row is staged in shared memory between the two passes, so no probability
// tensor exists anywhere.
//
// Geometry. A row is seen as 16-byte units of the logits tensor: with `a` = the number of
// elements of the row's first unit that precede the row (0 when the row starts on 16 bytes,
// always when Vp % 8 == 0), element j of the row is lane (a + j) % 8 of unit (a + j) / 8. Units
// [0, U) cover the classes [0, V) (the read span) and units [0, W) the whole row [0, Vp) (the write
// span). A unit whose 8 lanes all lie in the span is moved with one 16-byte access; the partial
// units at either end are moved lane by lane, touching only the row's own elements (the other
// lanes belong to the neighbouring rows, which another block may be writing in place). Lanes
// outside [0, V) are read as -Inf, which the max ignores and the sum counts as 0.
//
// Staging. Units [0, Uc) are copied to shared memory with cp.async (evict-first in L2: they are
// never read from memory again), in four commit groups so that pass 1 starts on the first group
// while the rest is in flight. When a row does not fit (Uc < U: beyond about 110K classes on
// H100), units [Uc, U) are read twice from global memory: pass 1 reads them forwards while the
// copies are in flight, pass 2 backwards, so that the most recently read units, the likeliest to
// be in L2, are read first.
//
// Arithmetic in base 2: terms are 2^(x * log2(e) - m2) with m2 = max(x) * log2(e), one FFMA and
// one MUFU.EX2 per element and pass. Per-thread (m2, s) pairs merge as s = s_a 2^(m2_a - m) +
// s_b 2^(m2_b - m), with a factor of exactly 1 where m2 equals the merged max so that -Inf maxima
// (threads that saw only masked lanes) never produce Inf - Inf.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <mutex>
#include <vector>

#include "errors/check.hpp"
#include "kernels/classifier/classifier.hpp"
#include "kernels/common/device.hpp"
#include "kernels/common/reduce.cuh"
#include "kernels/common/sm80.cuh"
#include "kernels/common/vec.cuh"

namespace kiln::impl {
namespace {

using dev::bf16;
using BPack = dev::Pack<bf16>;

constexpr int kMaxThreads = 1024;
// Units in flight per thread over the part of a row that is not staged (pass 1, pass 2).
constexpr int kBatch1 = 4, kBatch2 = 2;
constexpr int kGroups = 4;  // cp.async commit groups per thread (written out below: keep 4)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Shared memory per block besides the staged row (reduction scratch), rounded up generously.
constexpr int kStaticSmemReserve = 2048;

struct Params {
  const bf16* logits;      // (N, Vp)
  bf16* dlogits;           // (N, Vp), may equal logits
  float* losses;           // (N)
  const int32_t* targets;  // (N)
  int64_t Vp;
  int V;
  int cache_units;  // units of a row staged in shared memory at most
  int ignore_index;
  float dloss;
};

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

__device__ __forceinline__ void cp_async_16_evict_first(void* smem, const void* gmem,
                                                        uint64_t policy) {
  asm volatile(
      "cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(dev::smem_addr(smem)),
      "l"(gmem), "l"(policy)
      : "memory");
}

__device__ __forceinline__ BPack neg_inf_pack() {
  BPack p;
#pragma unroll
  for (int l = 0; l < 8; ++l)
    p.v[l] = __ushort_as_bfloat16(0xFF80);  // -Inf
  return p;
}

// A staged unit as one 16-byte shared load (a plain struct copy becomes eight 2-byte loads).
__device__ __forceinline__ BPack load_staged(const BPack* unit) {
  const int4 raw = *reinterpret_cast<const int4*>(unit);
  return *reinterpret_cast<const BPack*>(&raw);
}

// Unit u of the read span; `base` is the row start rounded down to 16 bytes (lane l of unit u is
// base[8u + l], element j = 8u + l - a of the row). Lanes outside [0, V) are -Inf and not read.
template <bool kStream>
__device__ __forceinline__ BPack read_unit(const bf16* base, int u, int a, int V) {
  const int j0 = 8 * u - a;
  if (j0 >= 0 && j0 + 8 <= V) {
    if constexpr (kStream) return dev::load_pack_stream(base + 8 * u);
    return dev::load_pack(base + 8 * u);
  }
  BPack p = neg_inf_pack();
#pragma unroll
  for (int l = 0; l < 8; ++l) {
    const int j = j0 + l;
    if (j >= 0 && j < V) p.v[l] = base[8 * u + l];
  }
  return p;
}

// Writes unit u of the write span: lanes in [0, Vp) only, one 16-byte store when all 8 are.
__device__ __forceinline__ void write_unit(bf16* base, int u, int a, int64_t Vp, const BPack& p) {
  const int j0 = 8 * u - a;
  if (j0 >= 0 && j0 + 8 <= Vp) {
    dev::store_pack_stream(base + 8 * u, p);
    return;
  }
#pragma unroll
  for (int l = 0; l < 8; ++l) {
    const int j = j0 + l;
    if (j >= 0 && j < Vp) base[8 * u + l] = p.v[l];
  }
}

// Folds 8 logits into the running (m2, s) of this thread.
__device__ __forceinline__ void online_update(float& m2, float& s, const BPack& p) {
  float x[8];
#pragma unroll
  for (int l = 0; l < 8; ++l)
    x[l] = __bfloat162float(p.v[l]);
  float mx = x[0];
#pragma unroll
  for (int l = 1; l < 8; ++l)
    mx = fmaxf(mx, x[l]);  // NaN lanes are skipped here; they reach the sum below
  const float mx2 = mx * kLog2e;
  if (mx2 > m2) {
    s *= ex2(m2 - mx2);  // m2 = -Inf: ex2(-Inf) = 0, and s is still 0
    m2 = mx2;
  }
  const float shift = m2 == -INFINITY ? 0.0f : m2;  // all lanes so far -Inf: their terms are 0
#pragma unroll
  for (int l = 0; l < 8; ++l)
    s += ex2(fmaf(x[l], kLog2e, -shift));
}

// Merges another thread's (m2, s). Symmetric in its two operands, bit for bit (no contraction),
// so every lane of a butterfly ends with the same pair.
__device__ __forceinline__ void merge(float& m2, float& s, float m2_other, float s_other) {
  const float m = fmaxf(m2, m2_other);
  const float fa = m2 == m ? 1.0f : ex2(m2 - m);
  const float fb = m2_other == m ? 1.0f : ex2(m2_other - m);
  s = __fadd_rn(__fmul_rn(s, fa), __fmul_rn(s_other, fb));
  m2 = m;
}

__global__ void __launch_bounds__(kMaxThreads, 1) classifier_fwd_bwd_kernel(const Params p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  BPack* cache = reinterpret_cast<BPack*>(smem_raw);  // (Uc) units of this row
  __shared__ float red_m2[32], red_s[32];
  __shared__ float target_logit;

  const int tid = threadIdx.x, T = blockDim.x;
  const int64_t row = blockIdx.x;
  const bf16* x = p.logits + row * p.Vp;
  bf16* dx = p.dlogits + row * p.Vp;
  const int a = static_cast<int>((reinterpret_cast<uintptr_t>(x) >> 1) & 7);
  const bf16* xbase = x - a;  // 16-byte aligned; only lanes of the row itself are accessed
  bf16* dxbase = dx - a;      // dlogits and logits share their alignment (both 16-byte aligned)
  const int V = p.V;
  const int W = static_cast<int>((a + p.Vp + 7) >> 3);
  const int target = p.targets[row];

  if (target == p.ignore_index) {
    BPack zero;
#pragma unroll
    for (int l = 0; l < 8; ++l)
      zero.v[l] = __float2bfloat16_rn(0.0f);
    for (int u = tid; u < W; u += T)
      write_unit(dxbase, u, a, p.Vp, zero);
    if (tid == 0) p.losses[row] = 0.0f;
    return;
  }

  const bool valid = target >= 0 && target < V;
  const int ut = valid ? (a + target) >> 3 : -1;  // the unit and lane holding the target logit
  const int lt = (a + target) & 7;
  const int U = (a + V + 7) >> 3;
  const int Uc = min(U, p.cache_units);

  // Issue the staging copies in kGroups commit groups of consecutive iterations.
  const int iters = (Uc + T - 1) / T;
  const int per_group = (iters + kGroups - 1) / kGroups;
  {
    const uint64_t policy = l2_evict_first_policy();
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      const int k_end = min(iters, (g + 1) * per_group);
      for (int k = g * per_group; k < k_end; ++k) {
        const int u = tid + k * T;
        if (u >= Uc) break;
        const int j0 = 8 * u - a;
        if (j0 >= 0 && j0 + 8 <= V) {
          cp_async_16_evict_first(&cache[u], xbase + 8 * u, policy);
        } else {
          cache[u] = read_unit<false>(xbase, u, a, V);  // partial: lane by lane
        }
      }
      dev::cp_async_commit();
    }
  }

  float m2 = -INFINITY, s = 0.0f;
  auto fold = [&](const BPack& v, int u) {
    if (u == ut) {
#pragma unroll
      for (int l = 0; l < 8; ++l)  // a constant index keeps v in registers
        if (l == lt) target_logit = __bfloat162float(v.v[l]);
    }
    online_update(m2, s, v);
  };

  // Pass 1 over the units that are not staged, while the copies land.
  for (int u0 = Uc + tid; u0 < U; u0 += kBatch1 * T) {
    BPack v[kBatch1];
#pragma unroll
    for (int k = 0; k < kBatch1; ++k)
      if (u0 + k * T < U) v[k] = read_unit<false>(xbase, u0 + k * T, a, V);
#pragma unroll
    for (int k = 0; k < kBatch1; ++k)
      if (u0 + k * T < U) fold(v[k], u0 + k * T);
  }

  // Pass 1 over the staged units, group by group as they land. Each thread reads back only the
  // units it copied itself, so its own wait suffices (no barrier yet).
  auto fold_group = [&](int g) {
    const int k_end = min(iters, (g + 1) * per_group);
    for (int k = g * per_group; k < k_end; ++k) {
      const int u = tid + k * T;
      if (u >= Uc) break;
      fold(load_staged(&cache[u]), u);
    }
  };
  static_assert(kGroups == 4, "the waits below are written out for four groups");
  dev::cp_async_wait<3>();
  fold_group(0);
  dev::cp_async_wait<2>();
  fold_group(1);
  dev::cp_async_wait<1>();
  fold_group(2);
  dev::cp_async_wait<0>();
  fold_group(3);

  // Block merge of (m2, s): butterflies within warps, then warp 0 over the warps' results. The
  // barriers also publish the staged row and target_logit to every thread.
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    merge(m2, s, __shfl_xor_sync(dev::kFullMask, m2, offset),
          __shfl_xor_sync(dev::kFullMask, s, offset));
  const int warp = tid >> 5, lane = tid & 31, warps = T >> 5;
  if (lane == 0) {
    red_m2[warp] = m2;
    red_s[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m2 = lane < warps ? red_m2[lane] : -INFINITY;
    s = lane < warps ? red_s[lane] : 0.0f;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
      merge(m2, s, __shfl_xor_sync(dev::kFullMask, m2, offset),
            __shfl_xor_sync(dev::kFullMask, s, offset));
    if (lane == 0) {
      const float shift = m2 == -INFINITY ? 0.0f : m2;
      // logsumexp = ln 2 * (shift + log2(s)); for an all -Inf row s = 0 and the loss is NaN.
      p.losses[row] = valid ? (shift + log2f(s)) * kLn2 - target_logit : NAN;
      red_m2[0] = m2;
      red_s[0] = s;
    }
  }
  __syncthreads();
  m2 = red_m2[0];
  s = red_s[0];

  // Pass 2: gradient = 2^(x log2 e - shift) * (dloss / s) - (j == target) * dloss.
  const float shift = m2 == -INFINITY ? 0.0f : m2;
  const float dloss = valid ? p.dloss : NAN;
  const float c = dloss * (1.0f / s);
  auto grad_unit = [&](const BPack& in, int u) {
    BPack out;
    const int j0 = 8 * u - a;
#pragma unroll
    for (int l = 0; l < 8; ++l) {
      const int j = j0 + l;
      float g = 0.0f;  // padding (and lanes before the row, which are not stored)
      if (j < V) {
        const float e = ex2(fmaf(__bfloat162float(in.v[l]), kLog2e, -shift));
        g = fmaf(e, c, j == target ? -dloss : 0.0f);
      }
      out.v[l] = __float2bfloat16_rn(g);
    }
    write_unit(dxbase, u, a, p.Vp, out);
  };

  // Units read twice first, last-read first (the likeliest still in L2).
  const int uncached = U - Uc;
  for (int k0 = tid; k0 < uncached; k0 += kBatch2 * T) {
    BPack v[kBatch2];
#pragma unroll
    for (int k = 0; k < kBatch2; ++k)
      if (k0 + k * T < uncached) v[k] = read_unit<true>(xbase, U - 1 - (k0 + k * T), a, V);
#pragma unroll
    for (int k = 0; k < kBatch2; ++k)
      if (k0 + k * T < uncached) grad_unit(v[k], U - 1 - (k0 + k * T));
  }
  for (int u = tid; u < Uc; u += T)
    grad_unit(load_staged(&cache[u]), u);
  // Units holding only padding: zeros, nothing to read.
  const BPack none = neg_inf_pack();
  for (int u = U + tid; u < W; u += T)
    grad_unit(none, u);
}

// Raises the kernel's dynamic shared memory limit on a device once, not on every call: the
// attribute is per device and only grows (a larger limit serves every smaller launch). The
// default limit is 48 KiB less the kernel's static shared memory, not 48 KiB, so it is raised
// for any size past what it was last set to (from 0: the first launch on a device sets it).
void allow_dynamic_smem(int device, int bytes) {
  static std::mutex mutex;
  static std::vector<int> allowed;  // by device ordinal
  std::lock_guard<std::mutex> lock(mutex);
  if (static_cast<int>(allowed.size()) <= device) allowed.resize(device + 1, 0);
  if (bytes <= allowed[device]) return;
  KILN_CUDA_CHECK(cudaFuncSetAttribute(classifier_fwd_bwd_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  allowed[device] = bytes;
}

}  // namespace

void classifier_fwd_bwd(float* losses, bf16* dlogits, const bf16* logits, const int32_t* targets,
                        int64_t N, int64_t V, int64_t Vp, float dloss, int32_t ignore_index,
                        cudaStream_t stream) {
  if (N == 0) return;
  const DeviceFacts& facts = current_device_facts();
  // Units of the read span for the worst alignment of a row (a = 7).
  const int64_t units = (V + 14) / 8;
  const int64_t optin = facts.max_shared_memory_per_block_optin;
  int64_t cache_units;
  int threads;
  if (units * 16 + kStaticSmemReserve <= optin / 2) {
    // The whole row is staged and at least two blocks fit on an SM, so one block's loads overlap
    // another's arithmetic. About 4 units per thread, at most 512 threads.
    cache_units = units;
    const int64_t want = ((units + 4 * 32 - 1) / (4 * 32)) * 32;
    threads = static_cast<int>(want < 64 ? 64 : (want > 512 ? 512 : want));
  } else {
    // One block per SM, staging as much of the row as the block may hold.
    cache_units = (optin - kStaticSmemReserve) / 16;
    if (cache_units > units) cache_units = units;
    threads = kMaxThreads;
  }
  const size_t smem = static_cast<size_t>(cache_units) * 16;
  allow_dynamic_smem(facts.ordinal, static_cast<int>(smem));
  Params p;
  p.logits = logits;
  p.dlogits = dlogits;
  p.losses = losses;
  p.targets = targets;
  p.Vp = Vp;
  p.V = static_cast<int>(V);
  p.cache_units = static_cast<int>(cache_units);
  p.ignore_index = ignore_index;
  p.dloss = dloss;
  classifier_fwd_bwd_kernel<<<static_cast<unsigned>(N), threads, smem, stream>>>(p);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
