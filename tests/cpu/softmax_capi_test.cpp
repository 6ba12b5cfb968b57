// The C ABI's argument checks of softmax: every bad argument refused with
// KILN_STATUS_INVALID_ARGUMENT and a message naming it, before anything is launched
// (tests/common/capi.hpp).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>

#include "kiln/softmax.h"
#include "tests/common/capi.hpp"

using kiln::test::arena_at;
using kiln::test::expect_invalid;

TEST_CASE("kiln_softmax_fwd and kiln_softmax_bwd reject bad arguments before launching",
          "[softmax][api]") {
  const auto bf16 = KILN_DTYPE_BF16;
  void *y = arena_at(0), *x = arena_at(8192), *dy = arena_at(16384), *dx = arena_at(24576);
  CHECK(kiln_softmax_fwd(y, x, 0, 128, 0.125, 1, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_softmax_fwd(x, x, 0, 128, 0.125, 0, bf16, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_softmax_fwd(nullptr, x, 4, 128, 0.125, 0, bf16, nullptr),
                 "kiln_softmax_fwd: y is null");
  expect_invalid(kiln_softmax_fwd(y, arena_at(8200), 4, 128, 0.125, 0, bf16, nullptr), "x (");
  expect_invalid(kiln_softmax_fwd(y, x, 4, 128, 0.0, 0, bf16, nullptr),
                 "scale must be finite and > 0");
  expect_invalid(kiln_softmax_fwd(y, x, 4, 128, INFINITY, 0, bf16, nullptr),
                 "scale must be finite and > 0");
  expect_invalid(kiln_softmax_fwd(y, x, 4, 128, 1.0, 2, bf16, nullptr), "causal must be 0 or 1");
  expect_invalid(kiln_softmax_fwd(y, x, 4, 0, 1.0, 0, bf16, nullptr), "C must be in");
  expect_invalid(kiln_softmax_fwd(y, x, -2, 16, 1.0, 0, bf16, nullptr), "N must be in");
  expect_invalid(kiln_softmax_fwd(arena_at(8208), x, 4, 128, 1.0, 0, bf16, nullptr),
                 "y and x overlap");

  CHECK(kiln_softmax_bwd(dy, dy, y, 0, 128, 0.125, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_softmax_bwd(y, dy, y, 0, 128, 0.125, bf16, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_softmax_bwd(dx, nullptr, y, 4, 128, 0.125, bf16, nullptr), "dy is null");
  expect_invalid(kiln_softmax_bwd(dx, dy, nullptr, 4, 128, 0.125, bf16, nullptr), "y is null");
  expect_invalid(kiln_softmax_bwd(dx, dy, y, 4, 128, -0.5, bf16, nullptr), "scale must be");
  expect_invalid(kiln_softmax_fwd(y, x, 4, 128, 1e39, 0, bf16, nullptr), "a normal fp32 value");
  expect_invalid(kiln_softmax_bwd(arena_at(16400), dy, y, 4, 128, 1.0, bf16, nullptr),
                 "dx and dy overlap");
  expect_invalid(kiln_softmax_bwd(dx, dy, y, 4, 128, 1.0, static_cast<kiln_dtype_t>(3), nullptr),
                 "dtype 3 is not");
  CHECK_THROWS_AS(kiln::softmax_fwd(y, x, 4, 128, 0.0, false, bf16, nullptr), kiln::Error);
}
