// Hopper (sm_90a) primitives: mbarriers, TMA bulk tensor copies, wgmma (warpgroup MMA) and its
// shared-memory descriptors, register reallocation, named barriers. Include only from files built
// for sm_90a (*_sm90.cu). Host-side TMA descriptor encoding is in kernels/common/tma.hpp.
//
// How the pieces fit (a warp-specialized pipeline of S stages, as kernels/gemm/gemm_sm90.cuh; the
// ring itself is TmaPipeline in kernels/common/sm90_pipeline.cuh):
//
//   producer (one thread)                         consumers (whole warpgroups)
//   wait(empty[s], phase ^ 1)                     wait(full[s], phase)
//   arrive_expect_tx(full[s], bytes)              wgmma_fence(); Wgmma<N>::ss(...) x k-steps;
//   tma_load_2d(..., full[s]) per operand         wgmma_commit(); wgmma_wait<1>();
//                                                 arrive(empty[s - 1])  (its reads are done)
//   s = s + 1; phase ^= 1 when s wraps to 0 (the same on both sides)
//
// mbarrier phases. A barrier starts in phase 0 with `count` pending arrivals (plus any
// transaction bytes announced by expect_tx); when both reach zero the phase completes and the next
// begins. wait(bar, parity) returns once the phase of that parity has completed, where "the phase
// before phase 0" counts as a completed phase of parity 1: so a producer waiting on a fresh
// `empty` barrier with parity 1 passes at once, which is what lets it fill every stage before
// the consumers release any.
//
// Proxies. TMA and wgmma access shared memory through the async proxy. Shared memory written by
// ordinary stores and then read by TMA (a store to global) or wgmma must be published with
// fence_proxy_async() by the writing threads before the barrier that orders them; mbarrier
// initialization must be published with fence_barrier_init() before any TMA signals the barrier.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/sm80.cuh"  // smem_addr
#include "kernels/common/sm90_wgmma.cuh"
#include "kernels/common/wait_bound.hpp"

namespace kiln::dev {

// ---- mbarrier -----------------------------------------------------------------------------------

// One thread initializes; `count` arrivals complete each phase (plus announced transaction bytes).
__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, std::uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
               : "memory");
}

// Makes mbarrier.init visible to the async proxy (TMA complete_tx) and to the other CTAs of a
// cluster; follow it with __syncthreads() (or a cluster barrier).
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// Arrives (release semantics) and returns without waiting.
__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}

// Arrives and announces `bytes` of transactions (TMA copies) that must also land before the
// phase completes. The producer calls it once per stage, before issuing the copies.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint64_t* bar, std::uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

// One bounded wait (the hardware suspends the thread for a while): true once the phase of
// `parity` has completed. Acquire semantics.
__device__ __forceinline__ bool mbarrier_try_wait(std::uint64_t* bar, std::uint32_t parity) {
  std::uint32_t done;
  asm volatile(
      "{\n.reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
  return done != 0;
}

// Nanoseconds of the GPU's global timer (coarse: it may tick in microseconds).
__device__ __forceinline__ std::uint64_t globaltimer_ns() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}

// What a timed-out wait leaves behind before it traps (one per translation unit; the last
// writer wins). A kernel holding wgmma in flight cannot call printf (vprintf is a function call,
// and ptxas serializes every wgmma of the kernel across it: C7510), so the record is what names
// the barrier: cuda-gdb stops at the trap (`print kiln::dev::g_wait_timeout` there, or in a core
// dump taken with CUDA_ENABLE_COREDUMP_ON_EXCEPTION=1); the kernel is the launch that fails
// (KILN_SYNC_AFTER_LAUNCH=1, as gpu-window.sh's rerun sets, blames it exactly). Compiling with
// KILN_DEBUG_WAITS=1 prints it too, at the price of serialized wgmma.
struct WaitTimeout {
  const char* what;             // "<kernel> <barrier>", a string literal
  std::uint32_t where;          // the barrier's shared-memory address | parity << 31
  std::uint32_t block, thread;  // blockIdx.x, threadIdx.x
};
[[maybe_unused]] static __device__ WaitTimeout g_wait_timeout;

// The failure path: a few stores and a trap, no call (the launch fails with
// cudaErrorLaunchFailure; the context is lost, as after any trap).
__device__ __forceinline__ void mbarrier_wait_timed_out(const char* what, std::uint64_t* bar,
                                                        std::uint32_t parity) {
  g_wait_timeout.what = what;
  g_wait_timeout.where = smem_addr(bar) | parity << 31;
  g_wait_timeout.block = blockIdx.x;
  g_wait_timeout.thread = threadIdx.x;
  __threadfence_system();
#if defined(KILN_DEBUG_WAITS) && KILN_DEBUG_WAITS
  printf(
      "kiln: deadlock: %s (mbarrier at shared 0x%x, parity %u) not complete after %llu ms in "
      "block %u thread %u: trap\n",
      what, smem_addr(bar), parity, static_cast<unsigned long long>(kWaitLimitNs / 1000000),
      blockIdx.x, threadIdx.x);
#endif
  __trap();
}

// Waits until the phase of `parity` has completed, for at most kWaitLimitNs (wait_bound.hpp);
// then traps naming `what` ("<kernel> <barrier>"), so a deadlock costs seconds, not a GPU window.
// Two 32-bit registers live in the loop (the try count and the start in the timer's units of
// 2^kWaitTimerShift ns): the consumers wait with their accumulators live and have none to spare.
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, std::uint32_t parity,
                                              const char* what) {
  std::uint32_t start = 0;  // 0: not read yet
  for (std::uint32_t spins = 1; !mbarrier_try_wait(bar, parity); ++spins) {
    if (!wait_check_due(spins)) continue;
    const std::uint32_t now = wait_timer_units(globaltimer_ns());
    if (start == 0) {
      start = now | 1;  // never 0; one unit (1 us) late at worst
    } else if (wait_units_passed(start, now)) {
      mbarrier_wait_timed_out(what, bar, parity);
    }
  }
}

// ---- fences and barriers ------------------------------------------------------------------------

// Orders this thread's earlier generic-proxy shared-memory accesses before later async-proxy ones
// (TMA store reading the tile it wrote, wgmma reading operands it wrote).
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads (a multiple of 32).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---- register reallocation ----------------------------------------------------------------------

// Every warp of a warpgroup executes the same one. kRegs: a multiple of 8 in [24, 256]. The
// producer gives registers back (dec) so the consumers can take more (inc) than the launch's
// even share; ptxas allocates the code after each to the new limit.
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg range");
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg range");
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// ---- TMA (cp.async.bulk.tensor) -----------------------------------------------------------------
// `map` is the address of a CUtensorMap passed as a __grid_constant__ kernel parameter (or placed
// in global memory and fenced). Coordinates are in elements, innermost first, and may lie partly
// or wholly outside the tensor: loads fill those elements with zeros (and still count the whole
// box's bytes toward complete_tx); stores skip them.

__device__ __forceinline__ void tma_prefetch_descriptor(const void* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(map) : "memory");
}

// Global -> shared, one box, completing `bytes` of the barrier's announced transactions.
__device__ __forceinline__ void tma_load_2d(void* smem_dst, const void* map, std::uint64_t* bar,
                                            int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];\n" ::"r"(smem_addr(smem_dst)),
      "l"(map), "r"(smem_addr(bar)), "r"(c0), "r"(c1)
      : "memory");
}
__device__ __forceinline__ void tma_load_3d(void* smem_dst, const void* map, std::uint64_t* bar,
                                            int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(smem_addr(smem_dst)),
      "l"(map), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

__device__ __forceinline__ void tma_load_4d(void* smem_dst, const void* map, std::uint64_t* bar,
                                            int c0, int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];\n" ::"r"(smem_addr(smem_dst)),
      "l"(map), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

// Shared -> global, one box; the tile must have been published with fence_proxy_async() by every
// thread that wrote it, then a barrier. Completion is tracked per thread in bulk groups.
__device__ __forceinline__ void tma_store_2d(const void* map, const void* smem_src, int c0,
                                             int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.global.shared::cta.tile.bulk_group [%0, {%2, %3}], [%1];\n" ::"l"(
          map),
      "r"(smem_addr(smem_src)), "r"(c0), "r"(c1)
      : "memory");
}
__device__ __forceinline__ void tma_store_commit() {
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
// Waits until at most kPending of this thread's bulk groups still read their shared source: the
// buffers of the others may be rewritten.
template <int kPending>
__device__ __forceinline__ void tma_store_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(kPending) : "memory");
}
// Waits until at most kPending of this thread's bulk groups are incomplete (writes done).
template <int kPending>
__device__ __forceinline__ void tma_store_wait() {
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ---- wgmma --------------------------------------------------------------------------------------
// A warpgroup (4 consecutive warps, the first a multiple of 4) computes D (64 x N, fp32 in
// registers) += A (64 x 16) * B (16 x N) per instruction (Wgmma<N> in sm90_wgmma.cuh).
// Accumulator layout, per thread t of the warpgroup (warp w = t / 32, lane l = t % 32):
//   d[4 j + 0], d[4 j + 1]: row 16 w + l / 4,     columns 8 j + 2 (l % 4) + {0, 1}
//   d[4 j + 2], d[4 j + 3]: row 16 w + l / 4 + 8, the same columns          (j = 0 .. N / 8 - 1)
// Sequence: wgmma_fence() (orders earlier register/shared accesses before the async MMAs), the
// MMAs, wgmma_commit() (closes a group), wgmma_wait<n>() (at most n groups still in flight).
// Between issue and wait the accumulators belong to the hardware: the compiler must not touch
// them, which wgmma_fence_operand() enforces around the region.

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// Pins the accumulators in place across the asynchronous region: the compiler may not move a
// read or write of them across this point (it sees each register read and written here).
template <int kRegs>
__device__ __forceinline__ void wgmma_fence_operand(float (&d)[kRegs]) {
#pragma unroll
  for (int i = 0; i < kRegs; ++i)
    asm volatile("" : "+f"(d[i])::"memory");
}
// The same for packed bf16 A operands held in registers (wgmma's register-A form), which an
// in-flight wgmma reads until its wait_group.
template <int kSteps>
__device__ __forceinline__ void wgmma_fence_operand(std::uint32_t (&a)[kSteps][4]) {
#pragma unroll
  for (int i = 0; i < kSteps; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      asm volatile("" : "+r"(a[i][e])::"memory");
}

// Shared-memory matrix descriptor for a tile in the 128-byte swizzle layout, the layout TMA
// writes with CU_TENSOR_MAP_SWIZZLE_128B: rows of 128 bytes (64 bf16), in which the 16-byte chunk
// c of row r sits at chunk position c ^ (r % 8); 8 rows form a 1024-byte atom. The tile must
// start 1024-byte aligned (the swizzle is computed from address bits 4-9, so a start advanced by
// less than 128 bytes within an atom, e.g. to the next 16-element K step, stays valid).
//
//   K-major operand (row = one M/N index, 64 K values):
//     start = tile + 32 * (k / 16) bytes for the k-th K step; LBO unused (1);
//     SBO = 1024 (from one 8-row atom to the next along M/N).
//   M/N-major operand (row = one K index, 64 M/N values; wider M/N in 64-wide column blocks):
//     start = tile + 2048 * (k / 16) (16 K rows = two atoms);
//     LBO = bytes from one 64-wide M/N column block to the next;
//     SBO = 1024 (from one group of 8 K rows to the next).
// Descriptor bits: 0-13 start >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 49-51 base offset (0 for
// 1024-aligned atoms), 62-63 swizzle mode (1 = 128B).
__device__ __forceinline__ std::uint64_t wgmma_desc_sw128(const void* smem, std::uint32_t lbo_bytes,
                                                          std::uint32_t sbo_bytes) {
  const std::uint64_t addr = smem_addr(smem);
  return ((addr & 0x3FFFF) >> 4) | (std::uint64_t((lbo_bytes >> 4) & 0x3FFF) << 16) |
         (std::uint64_t((sbo_bytes >> 4) & 0x3FFF) << 32) | (std::uint64_t(1) << 62);
}

// The byte offset of element (row, col) (col in elements of `kElemBytes`) inside a 128-byte
// swizzled tile, as TMA lays it out: for epilogue threads writing a tile a TMA store then reads.
template <int kElemBytes>
__device__ __forceinline__ std::uint32_t sw128_offset(std::uint32_t row, std::uint32_t col) {
  const std::uint32_t byte = col * kElemBytes;
  return row * 128 + ((((byte >> 4) ^ row) & 7) << 4) + (byte & 15);
}

// ---- bulk reductions (cp.reduce.async.bulk) -----------------------------------------------------

// gmem[i] += smem[i] for `bytes` / 4 floats (bytes a multiple of 16; both addresses 16-byte
// aligned), performed by the TMA unit as atomic adds in L2. Like a TMA store: publish the source
// with fence_proxy_async() and a barrier first; tracked in this thread's bulk groups
// (tma_store_commit, tma_store_wait_read before reusing the source, tma_store_wait before exit).
__device__ __forceinline__ void bulk_reduce_add_f32(float* gmem, const void* smem,
                                                    std::uint32_t bytes) {
  asm volatile(
      "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(gmem),
      "r"(smem_addr(smem)), "r"(bytes)
      : "memory");
}

}  // namespace kiln::dev
