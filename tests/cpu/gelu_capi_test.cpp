// The C ABI's argument checks of gelu: every bad argument refused with KILN_STATUS_INVALID_ARGUMENT
// and a message naming it, before anything is launched (tests/common/capi.hpp).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>

#include "kiln/gelu.h"
#include "tests/common/capi.hpp"

using kiln::test::arena_at;
using kiln::test::expect_invalid;

TEST_CASE("kiln_gelu_fwd and kiln_gelu_bwd reject bad arguments before launching", "[gelu][api]") {
  const auto f32 = KILN_DTYPE_F32;
  void *y = arena_at(0), *x = arena_at(4096), *dy = arena_at(8192);
  CHECK(kiln_gelu_fwd(y, x, 0, f32, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_gelu_fwd(x, x, 0, f32, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_gelu_fwd(nullptr, x, 10, f32, nullptr), "kiln_gelu_fwd: y is null");
  expect_invalid(kiln_gelu_fwd(y, arena_at(4100), 10, f32, nullptr), "x (");
  expect_invalid(kiln_gelu_fwd(y, x, -1, f32, nullptr), "n must be >= 0");
  expect_invalid(kiln_gelu_fwd(arena_at(4112), x, 100, f32, nullptr), "y and x overlap");
  expect_invalid(kiln_gelu_fwd(y, x, 10, static_cast<kiln_dtype_t>(2), nullptr), "dtype 2 is not");
  CHECK(kiln_gelu_bwd(dy, dy, x, 0, f32, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_gelu_bwd(y, nullptr, x, 10, f32, nullptr), "dy is null");
  expect_invalid(kiln_gelu_bwd(y, dy, nullptr, 10, f32, nullptr), "x is null");
  expect_invalid(kiln_gelu_bwd(x, dy, x, 10, f32, nullptr), "dx and x overlap");
  expect_invalid(kiln_gelu_bwd(arena_at(8200), dy, x, 10, f32, nullptr), "dx (");
  CHECK_THROWS_AS(kiln::gelu_fwd(y, x, -5, f32, nullptr), kiln::Error);
}
