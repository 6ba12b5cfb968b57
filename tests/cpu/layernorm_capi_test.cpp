// The C ABI's argument checks of layernorm: every bad argument refused with
// KILN_STATUS_INVALID_ARGUMENT and a message naming it, before anything is launched
// (tests/common/capi.hpp).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "kiln/layernorm.h"
#include "tests/common/capi.hpp"

using kiln::test::arena_at;
using kiln::test::arena_f32;
using kiln::test::expect_invalid;

TEST_CASE("kiln_layernorm_fwd rejects bad arguments before launching", "[layernorm][api]") {
  const auto bf16 = KILN_DTYPE_BF16;
  void *y = arena_at(0), *x = arena_at(4096), *g = arena_at(8192), *b = arena_at(8448);
  float *mean = arena_f32(9000), *rstd = arena_f32(9100);
  // N = 0 with valid arguments: nothing to do, OK without a device.
  CHECK(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_layernorm_fwd(y, nullptr, nullptr, x, g, b, 0, 64, 1e-5, bf16, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(kiln_layernorm_fwd(nullptr, mean, rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr),
                 "kiln_layernorm_fwd: y is null");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, nullptr, g, b, 0, 64, 1e-5, bf16, nullptr),
                 "x is null");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, nullptr, b, 0, 64, 1e-5, bf16, nullptr),
                 "gamma is null");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, nullptr, 0, 64, 1e-5, bf16, nullptr),
                 "beta is null");
  expect_invalid(kiln_layernorm_fwd(arena_at(2), mean, rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr),
                 "y (");
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("is not 16-byte aligned"));
  expect_invalid(
      kiln_layernorm_fwd(y, mean, rstd, arena_at(4104), g, b, 0, 64, 1e-5, bf16, nullptr), "x (");
  expect_invalid(kiln_layernorm_fwd(y, arena_f32(9001), rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr),
                 "mean (");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 0, 1e-5, bf16, nullptr),
                 "C must be in [1, 2^31 - 4] (got 0)");
  expect_invalid(
      kiln_layernorm_fwd(y, mean, rstd, x, g, b, 1, (int64_t{1} << 31) - 3, 1e-5, bf16, nullptr),
      "C must be in [1, 2^31 - 4]");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, -1, 64, 1e-5, bf16, nullptr),
                 "N must be in [0, 2^31 - 1] (got -1)");
  expect_invalid(
      kiln_layernorm_fwd(y, mean, rstd, x, g, b, int64_t{1} << 31, 64, 1e-5, bf16, nullptr),
      "N must be in");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 64, 0.0, bf16, nullptr),
                 "eps must be finite and > 0");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 64, std::nan(""), bf16, nullptr),
                 "eps must be finite and > 0");
  // Positive in double but 0 (or denormal) as the float the kernel takes.
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 64, 1e-40, bf16, nullptr),
                 "a normal fp32 value");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 64, 1e-5,
                                    static_cast<kiln_dtype_t>(7), nullptr),
                 "dtype 7 is not");
  // y overlapping x by part of a row (x 16 bytes on): rejected; y == x (in place) is allowed.
  expect_invalid(
      kiln_layernorm_fwd(arena_at(4112), mean, rstd, x, g, b, 4, 64, 1e-5, bf16, nullptr),
      "y and x overlap");
  CHECK(kiln_layernorm_fwd(x, mean, rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_layernorm_fwd(y, mean, mean, x, g, b, 4, 64, 1e-5, bf16, nullptr),
                 "mean and rstd overlap");
  // The statistics are written row by row while other rows' threads still read x (as RMSNorm).
  expect_invalid(
      kiln_layernorm_fwd(y, arena_f32(4096 + 64), rstd, x, g, b, 4, 64, 1e-5, bf16, nullptr),
      "mean and x overlap");
  expect_invalid(
      kiln_layernorm_fwd(y, mean, arena_f32(4096 + 496), x, g, b, 4, 64, 1e-5, bf16, nullptr),
      "rstd and x overlap");
  expect_invalid(kiln_layernorm_fwd(y, arena_f32(496), rstd, x, g, b, 4, 64, 1e-5, bf16, nullptr),
                 "y and mean overlap");
  // The C++ wrapper throws the same.
  try {
    kiln::layernorm_fwd(y, mean, rstd, x, g, b, 4, 0, 1e-5, bf16, nullptr);
    FAIL("no exception");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::invalid_argument);
    CHECK_THAT(std::string(e.what()), Catch::Contains("C must be in"));
  }
}

TEST_CASE("kiln_residual_layernorm_fwd allows residual to be a or b, nothing else",
          "[layernorm][api]") {
  const auto f32 = KILN_DTYPE_F32;
  void *r = arena_at(0), *y = arena_at(4096), *a = arena_at(8192), *b = arena_at(12288),
       *g = arena_at(16384), *be = arena_at(16640);
  CHECK(kiln_residual_layernorm_fwd(r, y, nullptr, nullptr, a, b, g, be, 0, 64, 1e-5, f32,
                                    nullptr) == KILN_STATUS_OK);
  CHECK(kiln_residual_layernorm_fwd(a, y, nullptr, nullptr, a, b, g, be, 0, 64, 1e-5, f32,
                                    nullptr) == KILN_STATUS_OK);
  CHECK(kiln_residual_layernorm_fwd(b, y, nullptr, nullptr, a, b, g, be, 0, 64, 1e-5, f32,
                                    nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_residual_layernorm_fwd(arena_at(8208), y, nullptr, nullptr, a, b, g, be, 4,
                                             64, 1e-5, f32, nullptr),
                 "residual and a overlap");
  expect_invalid(
      kiln_residual_layernorm_fwd(r, r, nullptr, nullptr, a, b, g, be, 4, 64, 1e-5, f32, nullptr),
      "y and residual overlap");
  expect_invalid(
      kiln_residual_layernorm_fwd(r, a, nullptr, nullptr, a, b, g, be, 4, 64, 1e-5, f32, nullptr),
      "y and a overlap");
  expect_invalid(kiln_residual_layernorm_fwd(nullptr, y, nullptr, nullptr, a, b, g, be, 4, 64, 1e-5,
                                             f32, nullptr),
                 "kiln_residual_layernorm_fwd: residual is null");
  expect_invalid(kiln_residual_layernorm_fwd(r, y, nullptr, nullptr, a, arena_at(12296), g, be, 4,
                                             64, 1e-5, f32, nullptr),
                 "b (");
  // mean and rstd overlap no input and not the residual (as in kiln_residual_rmsnorm_fwd).
  float* stat = arena_f32(20480);
  CHECK(kiln_residual_layernorm_fwd(r, y, stat, stat + 4, a, b, g, be, 0, 64, 1e-5, f32, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(kiln_residual_layernorm_fwd(r, y, arena_f32(8192 + 256), stat, a, b, g, be, 4, 64,
                                             1e-5, f32, nullptr),
                 "mean and a overlap");
  expect_invalid(kiln_residual_layernorm_fwd(r, y, stat, arena_f32(12288 + 1008), a, b, g, be, 4,
                                             64, 1e-5, f32, nullptr),
                 "rstd and b overlap");
  expect_invalid(kiln_residual_layernorm_fwd(r, y, arena_f32(16), stat, a, b, g, be, 4, 64, 1e-5,
                                             f32, nullptr),
                 "residual and mean overlap");
}

TEST_CASE("kiln_layernorm_bwd_workspace_size is one fp32 partial row pair per block",
          "[layernorm][api]") {
  size_t bytes = 1;
  REQUIRE(kiln_layernorm_bwd_workspace_size(0, 768, &bytes) == KILN_STATUS_OK);
  CHECK(bytes == 0);
  REQUIRE(kiln_layernorm_bwd_workspace_size(1, 768, &bytes) == KILN_STATUS_OK);
  CHECK(bytes == 2 * 768 * sizeof(float));
  // C rounded up to 16 bytes per partial row.
  REQUIRE(kiln_layernorm_bwd_workspace_size(1, 7, &bytes) == KILN_STATUS_OK);
  CHECK(bytes == 2 * 8 * sizeof(float));
  // Grows with N up to a cap, so a large batch needs a bounded workspace.
  size_t small = 0, large = 0, huge = 0;
  REQUIRE(kiln_layernorm_bwd_workspace_size(1000, 768, &small) == KILN_STATUS_OK);
  REQUIRE(kiln_layernorm_bwd_workspace_size(100000, 768, &large) == KILN_STATUS_OK);
  REQUIRE(kiln_layernorm_bwd_workspace_size(1000000, 768, &huge) == KILN_STATUS_OK);
  CHECK(small < large);
  CHECK(large == huge);
  CHECK(huge <= 1024 * 2 * 768 * sizeof(float));
  CHECK(kiln::layernorm_bwd_workspace_size(1000, 768) == small);
  expect_invalid(kiln_layernorm_bwd_workspace_size(4, 768, nullptr), "bytes is null");
  expect_invalid(kiln_layernorm_bwd_workspace_size(4, 0, &bytes), "C must be in");
}

TEST_CASE("kiln_layernorm_bwd rejects bad arguments before launching", "[layernorm][api]") {
  const auto bf16 = KILN_DTYPE_BF16;
  void *dx = arena_at(0), *dy = arena_at(4096), *x = arena_at(8192), *g = arena_at(12288),
       *ws = arena_at(16384);
  float *dg = arena_f32(40000), *db = arena_f32(44000), *mean = arena_f32(48000),
        *rstd = arena_f32(48512);
  const int64_t N = 16, C = 64;
  size_t need = 0;
  REQUIRE(kiln_layernorm_bwd_workspace_size(N, C, &need) == KILN_STATUS_OK);
  REQUIRE(need > 0);
  CHECK(kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, 0, C, nullptr, 0, bf16, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, C, ws, need - 1, bf16, nullptr),
      "kiln_layernorm_bwd: workspace_bytes is");
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("kiln_layernorm_bwd_workspace_size"));
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, C, nullptr, need, bf16, nullptr),
      "workspace is null");
  expect_invalid(kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, C, arena_at(16392), need,
                                    bf16, nullptr),
                 "workspace (");
  expect_invalid(
      kiln_layernorm_bwd(dx, nullptr, db, dy, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dgamma is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, nullptr, dy, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dbeta is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, nullptr, rstd, N, C, ws, need, bf16, nullptr),
      "mean is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, nullptr, N, C, ws, need, bf16, nullptr),
      "rstd is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, nullptr, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dy is null");
  expect_invalid(kiln_layernorm_bwd(dx, dg, db, dy, arena_at(8200), g, mean, rstd, N, C, ws, need,
                                    bf16, nullptr),
                 "x (");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, dg, dy, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dgamma and dbeta overlap");
  expect_invalid(
      kiln_layernorm_bwd(dy, dg, db, dy, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dx and dy overlap");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, C, dx, need, bf16, nullptr),
      "workspace and dx overlap");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, -3, ws, need, bf16, nullptr),
      "C must be in");
}
