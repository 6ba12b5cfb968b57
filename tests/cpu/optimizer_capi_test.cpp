// The optimizer ops' C ABI: table preparation (host only, so it runs everywhere) and the
// argument checks, which reject bad calls before touching any device. Also the stochastic
// rounding helper shared by the AdamW kernel and the GPU tests.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/optimizer/stochastic_round.hpp"
#include "kiln/optimizer.h"

namespace {

void* fake(std::uintptr_t address) {
  return reinterpret_cast<void*>(address);
}

kiln_adamw_tensor_t adamw_tensor(int64_t n, std::uintptr_t at) {
  kiln_adamw_tensor_t t{};
  t.master = static_cast<float*>(fake(at));
  t.m = static_cast<float*>(fake(at + 0x1000000));
  t.v = static_cast<float*>(fake(at + 0x2000000));
  t.grad = static_cast<const float*>(fake(at + 0x3000000));
  t.param = fake(at + 0x4000000);
  t.n = n;
  t.chunk_begin = -7;
  t.decay = 1;
  return t;
}

kiln_adamw_config_t good_config() {
  kiln_adamw_config_t c{};
  c.lr = 6e-4f;
  c.beta1 = 0.9f;
  c.beta2 = 0.95f;
  c.eps = 1e-8f;
  c.weight_decay = 0.1f;
  c.step = 1;
  return c;
}

float from_bits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

double bf16_value(uint16_t bits) {
  return from_bits(uint32_t{bits} << 16);
}

}  // namespace

TEST_CASE("kiln_adamw_prepare numbers chunks and validates every entry", "[optimizer]") {
  constexpr int64_t K = KILN_MULTI_TENSOR_CHUNK;
  std::vector<kiln_adamw_tensor_t> t{adamw_tensor(0, 0x10000000), adamw_tensor(1, 0x20000000),
                                     adamw_tensor(K, 0x30000000), adamw_tensor(K + 1, 0x40000000),
                                     adamw_tensor(0, 0x50000000), adamw_tensor(5, 0x60000000)};
  t[0].master = nullptr;  // empty tensors may have null pointers
  t[5].param = nullptr;   // no bf16 copy
  int64_t total = -1;
  REQUIRE(kiln_adamw_prepare(t.data(), 6, &total) == KILN_STATUS_OK);
  CHECK(total == 5);
  const int64_t begins[] = {0, 0, 1, 2, 4, 4};
  for (int i = 0; i < 6; ++i)
    CHECK(t[i].chunk_begin == begins[i]);
  CHECK(kiln::adamw_prepare(t.data(), 6) == 5);

  auto expect_invalid = [&](std::vector<kiln_adamw_tensor_t> bad, const std::string& message) {
    for (auto& e : bad)
      e.chunk_begin = -7;
    int64_t n = -1;
    kiln_clear_last_error();
    CHECK(kiln_adamw_prepare(bad.data(), static_cast<int>(bad.size()), &n) ==
          KILN_STATUS_INVALID_ARGUMENT);
    CHECK_THAT(std::string(kiln_last_error()), Catch::StartsWith("kiln_adamw_prepare: "));
    CHECK_THAT(std::string(kiln_last_error()), Catch::Contains(message));
    CHECK(n == -1);
    for (const auto& e : bad)
      CHECK(e.chunk_begin == -7);  // a failed call changes nothing
  };
  auto bad = t;
  bad[2].n = -1;
  expect_invalid(bad, "tensors[2].n must be >= 0");
  bad = t;
  bad[1].grad = nullptr;
  expect_invalid(bad, "tensors[1].grad is null");
  bad = t;
  bad[3].m = static_cast<float*>(fake(0x41000004));
  expect_invalid(bad, "tensors[3].m");
  bad = t;
  bad[3].param = fake(0x44000002);
  expect_invalid(bad, "tensors[3].param");
  bad = t;
  bad[5].reserved = 1;
  expect_invalid(bad, "tensors[5].reserved must be 0");
  CHECK(kiln_adamw_prepare(nullptr, 1, &total) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_adamw_prepare(t.data(), 0, &total) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_adamw_prepare(t.data(), 6, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
}

TEST_CASE("kiln_adamw_step rejects bad hyperparameters and tables", "[optimizer]") {
  const auto* table = static_cast<const kiln_adamw_tensor_t*>(fake(0x70000000));
  auto expect_invalid = [&](const kiln_adamw_config_t& c, const std::string& message,
                            const float* scale = nullptr, int64_t total = 10) {
    kiln_clear_last_error();
    CHECK(kiln_adamw_step(table, 3, total, &c, scale, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
    CHECK_THAT(std::string(kiln_last_error()), Catch::StartsWith("kiln_adamw_step: "));
    CHECK_THAT(std::string(kiln_last_error()), Catch::Contains(message));
  };
  auto c = good_config();
  c.lr = -1;
  expect_invalid(c, "lr must be finite and >= 0");
  c = good_config();
  c.lr = std::numeric_limits<float>::quiet_NaN();
  expect_invalid(c, "lr must be finite");
  c = good_config();
  c.beta1 = 1.0f;
  expect_invalid(c, "beta1 must be in [0, 1)");
  c = good_config();
  c.beta2 = -0.1f;
  expect_invalid(c, "beta2 must be in [0, 1)");
  c = good_config();
  c.eps = 0;
  expect_invalid(c, "eps must be finite and > 0");
  c = good_config();
  c.weight_decay = -0.5f;
  expect_invalid(c, "weight_decay");
  c = good_config();
  c.step = 0;
  expect_invalid(c, "step is 1-based");
  expect_invalid(good_config(), "grad_scale", static_cast<const float*>(fake(0x80000002)));
  c = good_config();
  c.skip = static_cast<const int32_t*>(fake(0x80000006));
  expect_invalid(c, "skip");
  expect_invalid(good_config(), "total_chunks must be in [0, 2^31)", nullptr, -1);
  const auto cfg = good_config();
  CHECK(kiln_adamw_step(nullptr, 3, 10, &cfg, nullptr, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_adamw_step(table, 0, 10, &cfg, nullptr, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_adamw_step(table, 3, 10, nullptr, nullptr, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  // No chunks: nothing to launch, no device needed.
  CHECK(kiln_adamw_step(table, 3, 0, &cfg, nullptr, nullptr) == KILN_STATUS_OK);
}

TEST_CASE("kiln_global_norm: preparation, workspace size and argument checks", "[optimizer]") {
  constexpr int64_t K = KILN_MULTI_TENSOR_CHUNK;
  std::vector<kiln_norm_tensor_t> t{{static_cast<const float*>(fake(0x10000000)), 3 * K, 0},
                                    {nullptr, 0, 0},
                                    {static_cast<const float*>(fake(0x20000000)), 7, 0}};
  int64_t total = 0;
  REQUIRE(kiln_global_norm_prepare(t.data(), 3, &total) == KILN_STATUS_OK);
  CHECK(total == 4);
  CHECK(t[1].chunk_begin == 3);
  CHECK(t[2].chunk_begin == 3);
  auto bad = t;
  bad[2].data = static_cast<const float*>(fake(0x20000008));
  CHECK(kiln_global_norm_prepare(bad.data(), 3, &total) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("tensors[2].data"));

  size_t bytes = 0;
  CHECK(kiln_global_norm_workspace_size(4, &bytes) == KILN_STATUS_OK);
  CHECK(bytes == 256);
  CHECK(kiln_global_norm_workspace_size(1000, &bytes) == KILN_STATUS_OK);
  CHECK(bytes == 4096);
  CHECK(kiln::global_norm_workspace_size(0) == 256);
  CHECK(kiln_global_norm_workspace_size(-1, &bytes) == KILN_STATUS_INVALID_ARGUMENT);

  auto* out = static_cast<float*>(fake(0x30000000));
  const auto* table = static_cast<const kiln_norm_tensor_t*>(fake(0x40000000));
  void* ws = fake(0x50000000);
  CHECK(kiln_global_norm(out, table, 3, 1000, 1.0f, ws, 4095, nullptr) ==
        KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("workspace_bytes (4095)"));
  CHECK(kiln_global_norm(nullptr, table, 3, 4, 1.0f, ws, 256, nullptr) ==
        KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_global_norm(static_cast<float*>(fake(0x30000004)), table, 3, 4, 1.0f, ws, 256,
                         nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_global_norm(out, table, 0, 4, 1.0f, ws, 256, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_global_norm(out, table, 3, 4, 1.0f, nullptr, 256, nullptr) ==
        KILN_STATUS_INVALID_ARGUMENT);
}

TEST_CASE("stochastic rounding to bf16 is exactly unbiased over its 2^16 random values",
          "[optimizer]") {
  // For every r the result is one of the two bf16 neighbours of x; over all 65536 values of r
  // the mean is x exactly (the round-up count equals the dropped bits).
  for (float x : {1.0f + 1.0f / 3.0f, -2.71828f, 3.0e-39f /* subnormal */, 1.0e30f, 0.0f,
                  from_bits(0x3F7FFFFFu) /* rounds up into the next binade */}) {
    double sum = 0;
    for (uint32_t r = 0; r < 65536; ++r)
      sum += bf16_value(kiln::sr::round_bf16_bits(x, r));
    INFO("x = " << x);
    CHECK(sum / 65536.0 == double(x));
  }
  // r = 0 truncates; non-finite values keep their kind.
  CHECK(kiln::sr::round_bf16_bits(from_bits(0x3F80FFFFu), 0) == 0x3F80);
  CHECK(kiln::sr::round_bf16_bits(from_bits(0x3F80FFFFu), 1) == 0x3F81);
  CHECK(kiln::sr::round_bf16_bits(std::numeric_limits<float>::infinity(), 0xFFFF) == 0x7F80);
  CHECK(std::isnan(bf16_value(kiln::sr::round_bf16_bits(from_bits(0x7F800001u), 0xFFFF))));
  CHECK(std::isnan(
      bf16_value(kiln::sr::round_bf16_bits(std::numeric_limits<float>::quiet_NaN(), 0xFFFF))));
}

TEST_CASE("stochastic rounding's random bits depend on seed, step, tensor and group",
          "[optimizer]") {
  using kiln::sr::group_bits;
  using kiln::sr::stream_key;
  const uint64_t a = group_bits(stream_key(1, 10, 3), 77);
  CHECK(a == group_bits(stream_key(1, 10, 3), 77));  // reproducible
  CHECK(a != group_bits(stream_key(2, 10, 3), 77));
  CHECK(a != group_bits(stream_key(1, 11, 3), 77));
  CHECK(a != group_bits(stream_key(1, 10, 4), 77));
  CHECK(a != group_bits(stream_key(1, 10, 3), 78));
  // Roughly uniform: each of the 64 bits is set about half the time over many groups.
  const uint64_t key = stream_key(42, 1, 0);
  int ones[64] = {};
  const int n = 20000;
  for (int g = 0; g < n; ++g) {
    const uint64_t bits = group_bits(key, static_cast<uint64_t>(g));
    for (int b = 0; b < 64; ++b)
      ones[b] += static_cast<int>((bits >> b) & 1);
  }
  for (int b = 0; b < 64; ++b) {
    INFO("bit " << b);
    CHECK(std::abs(ones[b] - n / 2) < 5 * 71);  // 5 sigma, sigma = sqrt(n) / 2
  }
}
