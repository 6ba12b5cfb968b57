// The C ABI's argument checks of rope: every bad argument refused with KILN_STATUS_INVALID_ARGUMENT
// and a message naming it, before anything is launched (tests/common/capi.hpp).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/rope.h"
#include "tests/common/capi.hpp"
#include "tests/common/rope_configs.hpp"

using kiln::test::arena_at;
using kiln::test::expect_invalid;

TEST_CASE("kiln_rope_fwd, kiln_rope_bwd and kiln_rope_inv_freq reject bad arguments",
          "[rope][api]") {
  const auto bf16 = KILN_DTYPE_BF16;
  const auto c = kiln::test::rope_llama3(64, 32);
  void* x = arena_at(0);
  // Packed QKV, Llama-3.2-1B: NH 32, NKV 8, HD 64, nothing to do (B = 0 or T = 0 or H = 0).
  const std::int64_t st = 48 * 64, T = 16;
  CHECK(kiln_rope_fwd(x, 0, T, 40, T * st, st, 0, &c, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_rope_bwd(x, 4, 0, 40, T * st, st, 0, &c, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_rope_fwd(arena_at(2), 4, T, 0, T * st, st, 0, &c, bf16, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_rope_fwd(nullptr, 0, T, 40, T * st, st, 0, &c, bf16, nullptr),
                 "kiln_rope_fwd: x is null");
  expect_invalid(kiln_rope_bwd(nullptr, 0, T, 40, T * st, st, 0, &c, bf16, nullptr),
                 "kiln_rope_bwd: dx is null");
  expect_invalid(kiln_rope_fwd(arena_at(1), 0, T, 40, T * st, st, 0, &c, bf16, nullptr),
                 "not aligned to its element size");
  expect_invalid(kiln_rope_fwd(arena_at(2), 0, T, 40, T * st, st, 0, &c, KILN_DTYPE_F32, nullptr),
                 "not aligned to its element size");
  expect_invalid(kiln_rope_fwd(x, 0, T, 40, T * st, st, 0, nullptr, bf16, nullptr),
                 "config is null");
  expect_invalid(
      kiln_rope_fwd(x, 0, T, 40, T * st, st, 0, &c, static_cast<kiln_dtype_t>(7), nullptr),
      "dtype 7 is not");
  expect_invalid(kiln_rope_fwd(x, -1, T, 40, T * st, st, 0, &c, bf16, nullptr), "B must be in");
  expect_invalid(kiln_rope_fwd(x, 0, -2, 40, T * st, st, 0, &c, bf16, nullptr), "T must be in");
  expect_invalid(kiln_rope_fwd(x, 0, T, std::int64_t{1} << 31, T * st, st, 0, &c, bf16, nullptr),
                 "H must be in");
  expect_invalid(kiln_rope_fwd(x, 0, T, 40, T * st, st, -1, &c, bf16, nullptr), "pos_offset must");
  expect_invalid(
      kiln_rope_fwd(x, 0, T, 40, T * st, st, (std::int64_t{1} << 31) - 16, &c, bf16, nullptr),
      "pos_offset + T");
  // Strides: a token must hold its H heads, a batch its T tokens.
  expect_invalid(kiln_rope_fwd(x, 0, T, 40, T * st, 40 * 64 - 1, 0, &c, bf16, nullptr),
                 "stride_t (2559) must be >= H * head_dim = 2560");
  CHECK(kiln_rope_fwd(x, 0, 1, 40, 0, 0, 0, &c, bf16, nullptr) == KILN_STATUS_OK);  // T = 1
  expect_invalid(kiln_rope_fwd(x, 2, 0, 40, -1, st, 0, &c, bf16, nullptr), "stride_b (-1)");
  expect_invalid(kiln_rope_fwd(x, 2, T, 40, 15 * st + 40 * 64 - 1, st, 0, &c, bf16, nullptr),
                 "must be >= (T - 1) * stride_t + H * head_dim");
  expect_invalid(kiln_rope_fwd(x, 0, T, 40, T * st, std::int64_t{1} << 60, 0, &c, bf16, nullptr),
                 "is too large");
  expect_invalid(kiln_rope_fwd(x, 3, 1, 40, std::int64_t{1} << 61, 0, 0, &c, bf16, nullptr),
                 "is too large");

  // The configuration, through every entry.
  auto bad = [&](kiln_rope_config_t config, const std::string& needle) {
    std::vector<float> f(256);
    expect_invalid(kiln_rope_fwd(x, 0, T, 40, T * st, st, 0, &config, bf16, nullptr), needle);
    expect_invalid(kiln_rope_inv_freq(&config, f.data()), needle);
  };
  auto with = [&](auto edit) {
    auto config = c;
    edit(config);
    return config;
  };
  bad(with([](auto& k) { k.head_dim = 63; }), "config->head_dim must be even");
  bad(with([](auto& k) { k.head_dim = 0; }), "config->head_dim must be even");
  bad(with([](auto& k) { k.head_dim = 258; }), "in [2, 256]");
  bad(with([](auto& k) { k.theta = 1.0; }), "config->theta must be finite and > 1");
  bad(with([](auto& k) { k.theta = INFINITY; }), "config->theta");
  bad(with([](auto& k) { k.theta = NAN; }), "config->theta");
  bad(with([](auto& k) { k.scaling = static_cast<kiln_rope_scaling_t>(2); }), "config->scaling 2");
  bad(with([](auto& k) { k.factor = 0.5; }), "config->factor must be finite and >= 1");
  bad(with([](auto& k) { k.factor = NAN; }), "config->factor");
  bad(with([](auto& k) { k.low_freq_factor = 0; }), "config->low_freq_factor");
  bad(with([](auto& k) { k.high_freq_factor = 1; }), "config->high_freq_factor must be finite");
  bad(with([](auto& k) { k.original_max_position = 0; }), "config->original_max_position");
  // Without Llama 3 scaling its fields are not read.
  auto none = with([](auto& k) {
    k.scaling = KILN_ROPE_SCALING_NONE;
    k.factor = NAN;
    k.original_max_position = -5;
  });
  std::vector<float> f(32);
  CHECK(kiln_rope_inv_freq(&none, f.data()) == KILN_STATUS_OK);
  expect_invalid(kiln_rope_inv_freq(&none, nullptr), "inv_freq is null");
  CHECK(kiln_rope_fwd(x, 0, T, 40, T * st, st, 0, &none, bf16, nullptr) == KILN_STATUS_OK);
  CHECK_THROWS_AS(kiln::rope_fwd(x, -1, T, 40, T * st, st, 0, c, bf16, nullptr), kiln::Error);
  CHECK_THROWS_AS(kiln::rope_inv_freq(with([](auto& k) { k.head_dim = 3; }), f.data()),
                  kiln::Error);
}
