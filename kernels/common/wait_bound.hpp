// The bound on every mbarrier / TMA wait of the Hopper kernels (kernels/common/sm90.cuh): a wait
// that has not completed after kWaitLimitNs of %globaltimer time traps, naming the kernel's
// barrier and phase, so a deadlock costs seconds of a GPU window instead of all of it. The spin
// loop reads the timer only once every kWaitCheckEvery failed tries, and only after the first
// kWaitCheckEvery, so a wait that completes quickly never reads it.
//
// Host and device code: the arithmetic is tested on the CPU (tests/cpu/wait_bound_test.cpp).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KILN_WAIT_HD __host__ __device__
#else
#define KILN_WAIT_HD
#endif

namespace kiln::dev {

// Seconds, not milliseconds: a pipelined kernel may legitimately wait while other kernels (the
// GPU tests run several processes at once) or compute-sanitizer hold the GPU; no wait of kiln's
// kernels lasts a second when the kernel is healthy.
inline constexpr std::uint64_t kWaitLimitNs = 5'000'000'000ull;
// Failed tries between two timer reads (a power of two, so the test is a mask).
inline constexpr std::uint32_t kWaitCheckEvery = 1u << 8;
static_assert((kWaitCheckEvery & (kWaitCheckEvery - 1)) == 0, "kWaitCheckEvery: a power of two");

// True on the tries at which the timer is read (spins counts failed tries from 1).
KILN_WAIT_HD constexpr bool wait_check_due(std::uint32_t spins) {
  return (spins & (kWaitCheckEvery - 1)) == 0;
}

// True once `now_ns` is at least `limit_ns` past `start_ns`. The difference is taken in unsigned
// arithmetic, so a timer that wraps between the two reads still measures the right interval; a
// `now_ns` before `start_ns` (never, for %globaltimer) would read as a huge interval and trap.
KILN_WAIT_HD constexpr bool wait_deadline_passed(std::uint64_t start_ns, std::uint64_t now_ns,
                                                 std::uint64_t limit_ns) {
  return now_ns - start_ns >= limit_ns;
}

// The device loop keeps its start time in 32 bits: the timer in units of 2^kWaitTimerShift ns
// (about a microsecond), which wraps after 73 minutes. The difference of two readings is taken
// modulo 2^32 and read as signed: right across a wrap, and a reading at or before the start
// (the timer is coarse, and the loop stores start = now | 1, which may be one unit ahead of the
// next reading) is a wait of zero or less, never a huge one.
inline constexpr int kWaitTimerShift = 10;
KILN_WAIT_HD constexpr std::uint32_t wait_timer_units(std::uint64_t ns) {
  return static_cast<std::uint32_t>(ns >> kWaitTimerShift);
}
KILN_WAIT_HD constexpr bool wait_units_passed(std::uint32_t start_units, std::uint32_t now_units) {
  return static_cast<std::int32_t>(now_units - start_units) >=
         static_cast<std::int32_t>(kWaitLimitNs >> kWaitTimerShift);
}
static_assert((kWaitLimitNs >> kWaitTimerShift) < (std::uint64_t{1} << 31),
              "the limit fits the signed difference");

}  // namespace kiln::dev

#undef KILN_WAIT_HD
