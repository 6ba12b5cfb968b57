// The arithmetic of the bounded mbarrier waits (kernels/common/wait_bound.hpp), which the sm_90a
// kernels run on the device: when the timer is read, and when a wait has lasted too long.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>

#include "kernels/common/wait_bound.hpp"

using kiln::dev::kWaitCheckEvery;
using kiln::dev::kWaitLimitNs;
using kiln::dev::wait_check_due;
using kiln::dev::wait_deadline_passed;

TEST_CASE("bounded wait: the deadline is a few seconds and passes exactly at the limit",
          "[wait_bound]") {
  STATIC_REQUIRE(kWaitLimitNs >= 1'000'000'000ull);   // a slow, shared GPU does not trip it
  STATIC_REQUIRE(kWaitLimitNs <= 10'000'000'000ull);  // a deadlock costs seconds, not a window
  const std::uint64_t start = 1'765'000'000'000'000'000ull;  // %globaltimer: ns since 1970
  CHECK_FALSE(wait_deadline_passed(start, start, kWaitLimitNs));
  CHECK_FALSE(wait_deadline_passed(start, start + kWaitLimitNs - 1, kWaitLimitNs));
  CHECK(wait_deadline_passed(start, start + kWaitLimitNs, kWaitLimitNs));
  CHECK(wait_deadline_passed(start, start + 10 * kWaitLimitNs, kWaitLimitNs));
}

TEST_CASE("bounded wait: a timer that wraps between the reads still measures the interval",
          "[wait_bound]") {
  const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t start = max - 1000;
  CHECK_FALSE(wait_deadline_passed(start, start + 2000, kWaitLimitNs));  // wrapped to 999
  CHECK(wait_deadline_passed(start, start + kWaitLimitNs, kWaitLimitNs));
  CHECK_FALSE(wait_deadline_passed(start, 5, 1'000'000));  // 1006 ns across the wrap
  CHECK(wait_deadline_passed(start, 999'999 - 1001 + 1, 1'000'000));
}

TEST_CASE("bounded wait: the timer is read once every kWaitCheckEvery failed tries",
          "[wait_bound]") {
  STATIC_REQUIRE((kWaitCheckEvery & (kWaitCheckEvery - 1)) == 0);
  STATIC_REQUIRE(kWaitCheckEvery >= 16);  // the spin loop's hot path stays a try_wait and a mask
  int reads = 0;
  std::uint32_t first = 0;
  for (std::uint32_t spins = 1; spins <= 10 * kWaitCheckEvery; ++spins) {
    if (!wait_check_due(spins)) continue;
    ++reads;
    if (first == 0) first = spins;
  }
  CHECK(reads == 10);
  CHECK(first == kWaitCheckEvery);  // a wait done within kWaitCheckEvery tries reads no timer
  // The spin counter is 32 bits: at its wrap the cadence goes on (2^32 is a multiple).
  CHECK(wait_check_due(0));
  CHECK(wait_check_due(std::numeric_limits<std::uint32_t>::max() - kWaitCheckEvery + 1));
}

TEST_CASE("bounded wait: the 32-bit start time in timer units measures across a wrap",
          "[wait_bound]") {
  using kiln::dev::wait_timer_units;
  using kiln::dev::wait_units_passed;
  const std::uint32_t limit =
      static_cast<std::uint32_t>(kWaitLimitNs >> kiln::dev::kWaitTimerShift);
  CHECK(limit > 1000);  // many units: the rounding to a unit is noise
  const std::uint64_t t = 1'765'000'000'000'000'000ull;
  const std::uint32_t s = wait_timer_units(t);
  CHECK_FALSE(wait_units_passed(s, wait_timer_units(t + kWaitLimitNs / 2)));
  CHECK(wait_units_passed(s, wait_timer_units(t + kWaitLimitNs + 2048)));
  // Start just below the 32-bit wrap of the units.
  const std::uint64_t near_wrap = ((std::uint64_t{1} << (32 + kiln::dev::kWaitTimerShift)) - 5000)
                                  << 0;
  const std::uint32_t w = wait_timer_units(near_wrap);
  CHECK(w > 0xFFFF'FF00u);
  CHECK_FALSE(wait_units_passed(w, wait_timer_units(near_wrap + 1'000'000)));
  CHECK(wait_units_passed(w, wait_timer_units(near_wrap + kWaitLimitNs + 2048)));
  // The coarse timer may read the same unit again, and start = now | 1 may be one unit ahead of
  // it: a wait of -1 units is no wait, not 2^32 - 1 units (which would trap a healthy kernel).
  const std::uint32_t even = 1000;
  CHECK_FALSE(wait_units_passed(even | 1, even));
  CHECK_FALSE(wait_units_passed(0xFFFF'FFFFu, 0xFFFF'FFFEu));
  CHECK_FALSE(wait_units_passed(5, 5));
}

TEST_CASE("bounded wait: a stuck wait traps after about kWaitLimitNs, simulated on the host",
          "[wait_bound]") {
  using kiln::dev::wait_timer_units;
  using kiln::dev::wait_units_passed;
  // The device loop of mbarrier_wait (sm90.cuh), line for line, with a fake %globaltimer that
  // advances `ns_per_try` per failed try: it must give up on the first check at or after
  // start + limit, and not before.
  for (const std::uint64_t ns_per_try : {200ull, 1000ull, 100'000ull}) {
    std::uint64_t timer = 1'765'000'000'000'000'000ull, first_read = 0, gave_up_at = 0;
    std::uint32_t start = 0;
    for (std::uint32_t spins = 1; spins != 0; ++spins) {
      timer += ns_per_try;
      if (!wait_check_due(spins)) continue;
      const std::uint32_t now = wait_timer_units(timer);
      if (start == 0) {
        start = now | 1;
        first_read = timer;
      } else if (wait_units_passed(start, now)) {
        gave_up_at = timer;
        break;
      }
    }
    INFO("ns per try " << ns_per_try);
    REQUIRE(gave_up_at != 0);
    const std::uint64_t unit = std::uint64_t{1} << kiln::dev::kWaitTimerShift;
    CHECK(gave_up_at - first_read + 2 * unit >= kWaitLimitNs);
    CHECK(gave_up_at - first_read < kWaitLimitNs + ns_per_try * kWaitCheckEvery + 2 * unit);
  }
}
