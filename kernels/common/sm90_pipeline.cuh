// The mbarrier ring every warp-specialized Hopper kernel runs (sm_90a): kStages shared buffers,
// each guarded by a `full` barrier (the producer's data landed) and an `empty` barrier (the
// consumers are done reading it), walked in the same order by both sides. The sm_90a GEMM and
// both sm_90a attention kernels use it; the barrier primitives are in sm90.cuh.
//
//   producer                                      consumers
//   pipe.producer_acquire(st, what)               pipe.consumer_wait(st, what)
//   pipe.producer_expect_tx(st, bytes)            ... read stage st.stage ...
//   tma_load_*(..., pipe.full_barrier(st))        if (lane == 0) pipe.consumer_release(st.stage)
//   (or ordinary stores + producer_commit(st))
//   st.advance()                                  st.advance()
//
// Phases. Both sides start at stage 0, phase 0, and flip the phase bit each time the stage wraps
// to 0: the k-th use of a stage waits for the k-th completion of its barrier. The producer waits
// on `empty` with the opposite parity, because a fresh barrier counts "the phase before phase 0"
// (parity 1) as complete: its first kStages acquires pass at once, filling every stage before the
// consumers release any.
//
// Arrival counts (init): `full` completes after producer_arrivals arrivals plus the transaction
// bytes announced by producer_expect_tx (which is itself one arrival); `empty` after
// consumer_arrivals releases (kiln's kernels release once per consumer warp, from lane 0).
//
// Every wait is bounded (mbarrier_wait, wait_bound.hpp): a deadlock traps naming `what`.
//
// The ring is plain data in shared memory (full[] then empty[], 8 bytes each) so that it can sit
// at a fixed place in a kernel's shared-memory layout; the position (PipeState) lives in each
// thread's registers. Learned from CUTLASS's PipelineTmaAsync (as FlashAttention-3 uses it) and
// ThunderKittens' semaphores; written here in the vocabulary of sm90.cuh.
#pragma once

#include <cstdint>

#include "kernels/common/sm90.cuh"

namespace kiln::dev {

// A position in a ring of kStages: the stage and the parity of its current phase.
template <int kStages>
struct PipeState {
  static_assert(kStages >= 1, "a ring of at least one stage");
  int stage = 0;
  std::uint32_t phase = 0;
  __device__ __forceinline__ void advance() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

template <int kStages>
struct TmaPipeline {
  std::uint64_t full[kStages];
  std::uint64_t empty[kStages];

  // One thread, before any use; then fence_barrier_init() and a block barrier (__syncthreads),
  // as for any mbarrier a TMA copy completes.
  __device__ __forceinline__ void init(std::uint32_t producer_arrivals,
                                       std::uint32_t consumer_arrivals) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], producer_arrivals);
      mbarrier_init(&empty[s], consumer_arrivals);
    }
  }

  // Producer: waits until the consumers released the stage (its previous use).
  __device__ __forceinline__ void producer_acquire(const PipeState<kStages>& st, const char* what) {
    mbarrier_wait(&empty[st.stage], st.phase ^ 1, what);
  }
  // Producer: one arrival on the stage's `full` barrier that also announces `bytes` of TMA
  // transactions, issued before the copies that complete them. The bytes must be exactly those
  // of the boxes loaded (out-of-bounds fill included), or the consumers wait forever.
  __device__ __forceinline__ void producer_expect_tx(const PipeState<kStages>& st,
                                                     std::uint32_t bytes) {
    mbarrier_arrive_expect_tx(&full[st.stage], bytes);
  }
  // Producer: an arrival without transactions (data written by ordinary stores, released by the
  // arrival's release semantics).
  __device__ __forceinline__ void producer_commit(const PipeState<kStages>& st) {
    mbarrier_arrive(&full[st.stage]);
  }
  // The barrier a TMA copy into the stage completes.
  __device__ __forceinline__ std::uint64_t* full_barrier(const PipeState<kStages>& st) {
    return &full[st.stage];
  }
  // Producer, at the end: waits until every stage has been released, so no copy is in flight
  // and no consumer still reads when the producer exits. Advances `st` through the ring.
  __device__ __forceinline__ void producer_drain(PipeState<kStages>& st, const char* what) {
    for (int i = 0; i < kStages; ++i) {
      producer_acquire(st, what);
      st.advance();
    }
  }

  // Consumer: waits until the stage's data landed (acquire: the data is then visible).
  __device__ __forceinline__ void consumer_wait(const PipeState<kStages>& st, const char* what) {
    mbarrier_wait(&full[st.stage], st.phase, what);
  }
  // Consumer: one of consumer_arrivals releases of `stage` (a stage index, since a consumer may
  // release a stage it has already advanced past).
  __device__ __forceinline__ void consumer_release(int stage) { mbarrier_arrive(&empty[stage]); }
};

}  // namespace kiln::dev
