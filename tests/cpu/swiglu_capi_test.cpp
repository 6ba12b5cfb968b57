// The C ABI's argument checks of swiglu: every bad argument refused with
// KILN_STATUS_INVALID_ARGUMENT and a message naming it, before anything is launched
// (tests/common/capi.hpp).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>

#include "kiln/swiglu.h"
#include "tests/common/capi.hpp"

using kiln::test::arena_at;
using kiln::test::expect_invalid;

TEST_CASE("kiln_swiglu_fwd and kiln_swiglu_bwd reject bad arguments before launching",
          "[swiglu][api]") {
  const auto bf16 = KILN_DTYPE_BF16;
  void *out = arena_at(0), *gu = arena_at(4096), *dout = arena_at(8192), *dgu = arena_at(12288);
  CHECK(kiln_swiglu_fwd(out, gu, 0, 64, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_swiglu_bwd(dgu, dout, gu, 0, 64, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_swiglu_bwd(gu, dout, gu, 0, 64, bf16, nullptr) == KILN_STATUS_OK);  // in place
  expect_invalid(kiln_swiglu_fwd(nullptr, gu, 4, 64, bf16, nullptr),
                 "kiln_swiglu_fwd: out is null");
  expect_invalid(kiln_swiglu_fwd(out, arena_at(4104), 4, 64, bf16, nullptr), "gu (");
  expect_invalid(kiln_swiglu_fwd(out, gu, -1, 64, bf16, nullptr), "N must be in");
  expect_invalid(kiln_swiglu_fwd(out, gu, 4, 0, bf16, nullptr), "I must be in");
  expect_invalid(kiln_swiglu_fwd(out, gu, std::int64_t{1} << 31, 64, bf16, nullptr),
                 "N must be in");
  expect_invalid(kiln_swiglu_fwd(out, gu, (std::int64_t{1} << 31) - 1, (std::int64_t{1} << 31) - 1,
                                 bf16, nullptr),
                 "elements is too many");
  expect_invalid(kiln_swiglu_fwd(out, gu, 4, 64, static_cast<kiln_dtype_t>(3), nullptr),
                 "dtype 3 is not");
  // out (4, 512) bf16 = 4 KiB ends where gu begins: one more column overlaps it.
  CHECK(kiln_swiglu_fwd(out, gu, 0, 512, bf16, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_swiglu_fwd(out, gu, 4, 520, bf16, nullptr), "out and gu overlap");
  expect_invalid(kiln_swiglu_fwd(gu, gu, 4, 64, bf16, nullptr), "out and gu overlap");

  expect_invalid(kiln_swiglu_bwd(nullptr, dout, gu, 4, 64, bf16, nullptr), "dgu is null");
  expect_invalid(kiln_swiglu_bwd(dgu, nullptr, gu, 4, 64, bf16, nullptr), "dout is null");
  expect_invalid(kiln_swiglu_bwd(dgu, dout, nullptr, 4, 64, bf16, nullptr), "gu is null");
  expect_invalid(kiln_swiglu_bwd(arena_at(12296), dout, gu, 4, 64, bf16, nullptr), "dgu (");
  // A shifted view of gu is refused; gu itself is the supported in-place call.
  expect_invalid(kiln_swiglu_bwd(arena_at(4112), dout, gu, 4, 64, bf16, nullptr),
                 "dgu and gu overlap");
  expect_invalid(kiln_swiglu_bwd(dout, dout, gu, 4, 64, bf16, nullptr), "dgu and dout overlap");
  expect_invalid(kiln_swiglu_bwd(gu, gu, gu, 4, 64, bf16, nullptr), "dgu and dout overlap");
  CHECK_THROWS_AS(kiln::swiglu_fwd(out, gu, -5, 64, bf16, nullptr), kiln::Error);
  CHECK_THROWS_AS(kiln::swiglu_bwd(dgu, dout, gu, 4, -1, bf16, nullptr), kiln::Error);
}
