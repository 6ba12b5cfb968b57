// The C ABI's argument checks of rmsnorm: every bad argument refused with
// KILN_STATUS_INVALID_ARGUMENT and a message naming it, before anything is launched
// (tests/common/capi.hpp).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>

#include "kiln/layernorm.h"
#include "kiln/rmsnorm.h"
#include "tests/common/capi.hpp"

using kiln::test::arena_at;
using kiln::test::arena_f32;
using kiln::test::expect_invalid;

TEST_CASE("kiln_rmsnorm_fwd and kiln_rmsnorm_bwd reject bad arguments before launching",
          "[rmsnorm][api]") {
  const auto bf16 = KILN_DTYPE_BF16;
  void *y = arena_at(0), *x = arena_at(4096), *g = arena_at(8192), *ws = arena_at(16384);
  float* rstd = arena_f32(9000);
  CHECK(kiln_rmsnorm_fwd(y, rstd, x, g, 0, 64, 1e-6, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_rmsnorm_fwd(x, nullptr, x, g, 0, 64, 1e-6, bf16, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_rmsnorm_fwd(y, rstd, nullptr, g, 4, 64, 1e-6, bf16, nullptr),
                 "kiln_rmsnorm_fwd: x is null");
  expect_invalid(kiln_rmsnorm_fwd(y, rstd, x, arena_at(8194), 4, 64, 1e-6, bf16, nullptr),
                 "gamma (");
  expect_invalid(kiln_rmsnorm_fwd(y, arena_f32(9002), x, g, 4, 64, 1e-6, bf16, nullptr), "rstd (");
  expect_invalid(kiln_rmsnorm_fwd(y, rstd, x, g, 4, 64, -1.0, bf16, nullptr), "eps must be");
  expect_invalid(kiln_rmsnorm_fwd(y, rstd, x, g, 4, 0, 1e-6, bf16, nullptr), "C must be in");
  expect_invalid(kiln_rmsnorm_fwd(arena_at(4160), rstd, x, g, 4, 64, 1e-6, bf16, nullptr),
                 "y and x overlap");
  expect_invalid(kiln_rmsnorm_fwd(y, arena_f32(4096 + 64), x, g, 4, 64, 1e-6, bf16, nullptr),
                 "rstd and x overlap");

  size_t need = 0, ln = 0;
  REQUIRE(kiln_rmsnorm_bwd_workspace_size(16, 64, &need) == KILN_STATUS_OK);
  REQUIRE(kiln_layernorm_bwd_workspace_size(16, 64, &ln) == KILN_STATUS_OK);
  CHECK(need == 64 * sizeof(float));  // one partial row of dgamma
  CHECK(2 * need == ln);
  CHECK(kiln::rmsnorm_bwd_workspace_size(16, 64) == need);
  void *dx = arena_at(20480), *dy = arena_at(24576);
  float* dg = arena_f32(32768);
  CHECK(kiln_rmsnorm_bwd(dx, dg, dy, x, g, rstd, 0, 64, nullptr, 0, bf16, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(kiln_rmsnorm_bwd(dx, dg, dy, x, g, rstd, 16, 64, ws, need - 4, bf16, nullptr),
                 "kiln_rmsnorm_bwd_workspace_size");
  expect_invalid(kiln_rmsnorm_bwd(dx, nullptr, dy, x, g, rstd, 16, 64, ws, need, bf16, nullptr),
                 "dgamma is null");
  expect_invalid(kiln_rmsnorm_bwd(dx, dg, dy, x, g, nullptr, 16, 64, ws, need, bf16, nullptr),
                 "rstd is null");
  expect_invalid(kiln_rmsnorm_bwd(dx, dg, dx, x, g, rstd, 16, 64, ws, need, bf16, nullptr),
                 "dx and dy overlap");
  expect_invalid(kiln_rmsnorm_bwd(dx, dg, dy, x, g, rstd, 16, 64, ws, need,
                                  static_cast<kiln_dtype_t>(-1), nullptr),
                 "dtype -1 is not");
  CHECK_THROWS_AS(kiln::rmsnorm_fwd(y, rstd, x, g, 4, 64, 0.0, bf16, nullptr), kiln::Error);
}

TEST_CASE("kiln_residual_rmsnorm_fwd rejects bad arguments before launching", "[rmsnorm][api]") {
  // N = 4 rows of C = 64 bf16: 512 bytes per tensor, rstd 16 bytes.
  const auto bf16 = KILN_DTYPE_BF16;
  void *r = arena_at(0), *y = arena_at(4096), *a = arena_at(8192), *b = arena_at(12288),
       *g = arena_at(16384);
  float* rstd = arena_f32(20480);
  CHECK(kiln_residual_rmsnorm_fwd(r, y, rstd, a, b, g, 0, 64, 1e-6, bf16, nullptr) ==
        KILN_STATUS_OK);
  CHECK(kiln_residual_rmsnorm_fwd(a, y, nullptr, a, b, g, 0, 64, 1e-6, bf16, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(kiln_residual_rmsnorm_fwd(nullptr, y, rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
                 "residual is null");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, y, rstd, a, nullptr, g, 4, 64, 1e-6, bf16, nullptr),
                 "b is null");
  expect_invalid(
      kiln_residual_rmsnorm_fwd(r, y, rstd, arena_at(8194), b, g, 4, 64, 1e-6, bf16, nullptr),
      "a (");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, y, rstd, a, b, g, 4, 64, 0.0, bf16, nullptr),
                 "eps must be");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, y, rstd, a, b, g, 4, 64, 1e-6,
                                           static_cast<kiln_dtype_t>(-1), nullptr),
                 "dtype -1 is not");
  // y overlaps an input or the residual: other rows' threads would read what one row writes.
  expect_invalid(kiln_residual_rmsnorm_fwd(r, a, rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
                 "y and a overlap");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, arena_at(12288 + 256), rstd, a, b, g, 4, 64, 1e-6,
                                           bf16, nullptr),
                 "y and b overlap");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, r, rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
                 "y and residual overlap");
  // residual may be a or b exactly, never a shifted view of either.
  expect_invalid(
      kiln_residual_rmsnorm_fwd(arena_at(8192 + 128), y, rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
      "residual and a overlap");
  expect_invalid(kiln_residual_rmsnorm_fwd(arena_at(12288 - 256), y, rstd, a, b, g, 4, 64, 1e-6,
                                           bf16, nullptr),
                 "residual and b overlap");
  // rstd is written per row while the other rows still read a and b.
  expect_invalid(
      kiln_residual_rmsnorm_fwd(r, y, arena_f32(8192 + 256), a, b, g, 4, 64, 1e-6, bf16, nullptr),
      "rstd and a overlap");
  expect_invalid(
      kiln_residual_rmsnorm_fwd(r, y, arena_f32(12288), a, b, g, 4, 64, 1e-6, bf16, nullptr),
      "rstd and b overlap");
  expect_invalid(
      kiln_residual_rmsnorm_fwd(r, y, arena_f32(4096 + 496), a, b, g, 4, 64, 1e-6, bf16, nullptr),
      "rstd overlap");
}
