// kiln_gemm's dispatch on the device: AUTO's choice, the tuning pass, the table of measured
// winners (save, set, load, KILN_GEMM_TABLE), and a forced backend the device lacks refused.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kiln/gemm.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/gemm_support.hpp"

using kiln::test::DeviceBuffer;
using kiln::test::gemm::bf16;
using kiln::test::gemm::env;

TEST_CASE("gemm: AUTO, tuning and the table of measured winners", "[gemm]") {
  const std::int64_t M = 1024, N = 768, K = 768;
  auto rng = kiln::test::make_rng(12);
  DeviceBuffer<bf16> a(kiln::test::to_bf16(kiln::test::random_uniform(M * K, -1, 1, rng)));
  DeviceBuffer<bf16> b(kiln::test::to_bf16(kiln::test::random_uniform(N * K, -1, 1, rng)));
  DeviceBuffer<bf16> bias(kiln::test::to_bf16(kiln::test::random_uniform(N, -1, 1, rng)));
  DeviceBuffer<bf16> d(M * N), d_ref(M * N);
  kiln_gemm_params_t p;
  kiln_gemm_params_init(&p);
  p.m = M;
  p.n = N;
  p.k = K;
  p.trans_b = 1;
  p.a = a.get();
  p.b = b.get();
  p.epilogue = KILN_GEMM_EPILOGUE_BIAS;
  p.bias = bias.get();
  kiln_gemm_context_t* ctx = env().ctx.get();

  kiln_gemm_backend_t chosen = KILN_GEMM_BACKEND_AUTO;
  REQUIRE(kiln_gemm_select(ctx, &p, &chosen) == KILN_STATUS_OK);
  CHECK(chosen != KILN_GEMM_BACKEND_AUTO);

  p.d = d.get();
  REQUIRE(kiln_gemm_tune(ctx, &p, nullptr, &chosen) == KILN_STATUS_OK);
  kiln_gemm_backend_t selected = KILN_GEMM_BACKEND_AUTO;
  REQUIRE(kiln_gemm_select(ctx, &p, &selected) == KILN_STATUS_OK);
  CHECK(selected == chosen);  // AUTO follows the measurement

  // AUTO's result equals the chosen backend's, bit for bit.
  d.poison();
  REQUIRE(kiln_gemm(ctx, &p, nullptr) == KILN_STATUS_OK);
  p.backend = chosen;
  p.d = d_ref.get();
  REQUIRE(kiln_gemm(ctx, &p, nullptr) == KILN_STATUS_OK);
  CHECK(kiln::test::bitwise_equal(d.download(), d_ref.download()));
  p.backend = KILN_GEMM_BACKEND_AUTO;

  // Save, force another winner, load: the saved one comes back.
  const std::string path = "gemm_table_test.jsonl";
  REQUIRE(kiln_gemm_table_save(ctx, path.c_str()) == KILN_STATUS_OK);
  const kiln_gemm_backend_t other =
      chosen == KILN_GEMM_BACKEND_CUBLASLT ? KILN_GEMM_BACKEND_SM80 : KILN_GEMM_BACKEND_CUBLASLT;
  REQUIRE(kiln_gemm_table_set(ctx, &p, other) == KILN_STATUS_OK);
  REQUIRE(kiln_gemm_select(ctx, &p, &selected) == KILN_STATUS_OK);
  CHECK(selected == other);
  REQUIRE(kiln_gemm_table_load(ctx, path.c_str()) == KILN_STATUS_OK);
  REQUIRE(kiln_gemm_select(ctx, &p, &selected) == KILN_STATUS_OK);
  CHECK(selected == chosen);
  // KILN_GEMM_TABLE: a fresh context starts from the file, at its first AUTO call.
  {
    REQUIRE(setenv("KILN_GEMM_TABLE", path.c_str(), 1) == 0);
    kiln::GemmContext fresh(env().device.cublaslt(), env().device.workspace(),
                            env().device.workspace_bytes());
    REQUIRE(kiln_gemm_select(fresh.get(), &p, &selected) == KILN_STATUS_OK);
    CHECK(selected == chosen);
    REQUIRE(unsetenv("KILN_GEMM_TABLE") == 0);
  }
  std::remove(path.c_str());
  CHECK(kiln_gemm_table_load(ctx, path.c_str()) == KILN_STATUS_IO_ERROR);

  // A forced backend the device lacks is refused, not silently replaced.
  int sm90 = 0;
  REQUIRE(kiln_gemm_backend_available(KILN_GEMM_BACKEND_SM90, &sm90) == KILN_STATUS_OK);
  if (!sm90) {
    p.backend = KILN_GEMM_BACKEND_SM90;
    CHECK(kiln_gemm(ctx, &p, nullptr) == KILN_STATUS_NOT_SUPPORTED);
  }
}
