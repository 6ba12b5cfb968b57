// kiln_gemm on the device, the grid: every backend (forced) and epilogue against the double
// reference with the tolerance rule, over every layout, GPT-2's layer shapes, large squares, odd
// shapes and strided ones (harness: gemm_support.hpp). The bias gradient's repeatability and the
// GELU each backend applies are in gemm_epilogue_test.cpp; AUTO and the tuning table in
// gemm_dispatch_test.cpp.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "kiln/gemm.h"
#include "tests/common/support.hpp"
#include "tests/gpu/gemm_support.hpp"

using kiln::test::gemm::check_case;
using kiln::test::gemm::GemmCase;

TEST_CASE("gemm: every backend and epilogue, every layout, on a shape that is no tile multiple",
          "[gemm]") {
  const kiln_gemm_epilogue_t epilogues[] = {
      KILN_GEMM_EPILOGUE_NONE,     KILN_GEMM_EPILOGUE_BIAS,  KILN_GEMM_EPILOGUE_BIAS_GELU,
      KILN_GEMM_EPILOGUE_RESIDUAL, KILN_GEMM_EPILOGUE_DGELU, KILN_GEMM_EPILOGUE_BIAS_GRAD};
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (kiln_gemm_epilogue_t e : epilogues)
        for (int f32 = 0; f32 < 2; ++f32) {
          if (f32 && e != KILN_GEMM_EPILOGUE_NONE && e != KILN_GEMM_EPILOGUE_BIAS_GRAD) continue;
          GemmCase c;
          c.name = "layouts";
          c.M = 328;  // 2 full 128-row tiles + 72
          c.N = 392;  // a full 256-column tile + 136 (and 3 full 128-column tiles + 8)
          c.K = 200;  // 3 full 64-k blocks + 8
          c.ta = ta;
          c.tb = tb;
          c.epi = e;
          c.f32 = f32;
          c.alpha = e == KILN_GEMM_EPILOGUE_BIAS_GRAD ? 1.0f : 0.75f;
          c.beta = (e == KILN_GEMM_EPILOGUE_RESIDUAL || e == KILN_GEMM_EPILOGUE_BIAS_GRAD ||
                    e == KILN_GEMM_EPILOGUE_NONE)
                       ? 0.5f
                       : 0.0f;
          check_case(c);
        }
}

// The smoke set (scripts/gpu-window.sh runs it first and under compute-sanitizer): each backend
// (cuBLASLt, sm_90a, sm_80; the last two required on Hopper, available()), forward with the
// fused bias + GELU, the dGELU backward, the bias gradient into fp32, on one ragged shape.
TEST_CASE("gemm smoke: every backend, one small ragged shape, three epilogues", "[gemm][smoke]") {
  for (const kiln_gemm_epilogue_t e :
       {KILN_GEMM_EPILOGUE_BIAS_GELU, KILN_GEMM_EPILOGUE_DGELU, KILN_GEMM_EPILOGUE_BIAS_GRAD}) {
    GemmCase c;
    c.name = "smoke";
    c.M = 200;  // a 128-row tile + 72
    c.N = 264;  // a 256-column tile + 8
    c.K = 136;  // 2 full 64-k blocks + 8
    c.tb = e == KILN_GEMM_EPILOGUE_DGELU;
    c.ta = e == KILN_GEMM_EPILOGUE_BIAS_GRAD;
    c.epi = e;
    c.f32 = e == KILN_GEMM_EPILOGUE_BIAS_GRAD;
    c.beta = e == KILN_GEMM_EPILOGUE_BIAS_GRAD ? 0.5f : 0.0f;
    check_case(c);
  }
}

TEST_CASE("gemm: GPT-2 layer shapes, forward and backward, as the runtime calls them", "[gemm]") {
  const std::int64_t BT = kiln::test::gemm::tokens(), C = 768, V = 50304;
  // One case per GEMM of the layer as the runtime calls it: forward D = X W^T (trans_b), dX =
  // dY W, dW += dY^T X accumulated in place in fp32 (trans_a); 48 rows sampled of each.
  auto layer = [](const char* name, std::int64_t M, std::int64_t N, std::int64_t K,
                  kiln_gemm_epilogue_t e) {
    GemmCase c;
    c.name = name;
    c.M = M;
    c.N = N;
    c.K = K;
    c.epi = e;
    c.sample_rows = 48;
    return c;
  };
  auto fwd = [&](const char* name, std::int64_t N, std::int64_t K, kiln_gemm_epilogue_t e) {
    GemmCase c = layer(name, BT, N, K, e);
    c.tb = true;
    if (e == KILN_GEMM_EPILOGUE_RESIDUAL) c.beta = 1.0f;
    return c;
  };
  check_case(fwd("qkv", 3 * C, C, KILN_GEMM_EPILOGUE_BIAS));
  check_case(fwd("fc", 4 * C, C, KILN_GEMM_EPILOGUE_BIAS_GELU));
  check_case(fwd("attn proj", C, C, KILN_GEMM_EPILOGUE_RESIDUAL));
  check_case(fwd("fc proj", C, 4 * C, KILN_GEMM_EPILOGUE_RESIDUAL));
  check_case(fwd("lm head", V, C, KILN_GEMM_EPILOGUE_NONE));

  check_case(layer("dX fc proj (dgelu)", BT, 4 * C, C, KILN_GEMM_EPILOGUE_DGELU));
  check_case(layer("dX qkv", BT, C, 3 * C, KILN_GEMM_EPILOGUE_NONE));
  check_case(layer("dX lm head", BT, C, V, KILN_GEMM_EPILOGUE_NONE));

  auto dw = [&](const char* name, std::int64_t M, std::int64_t N, kiln_gemm_epilogue_t e) {
    GemmCase c = layer(name, M, N, BT, e);
    c.ta = true;
    c.f32 = true;
    c.beta = 1.0f;
    c.in_place = true;
    return c;
  };
  check_case(dw("dW qkv", 3 * C, C, KILN_GEMM_EPILOGUE_BIAS_GRAD));
  check_case(dw("dW fc", 4 * C, C, KILN_GEMM_EPILOGUE_BIAS_GRAD));
  check_case(dw("dW fc proj", C, 4 * C, KILN_GEMM_EPILOGUE_BIAS_GRAD));
  check_case(dw("dW lm head", V, C, KILN_GEMM_EPILOGUE_NONE));
}

TEST_CASE("gemm: large squares", "[gemm]") {
  const std::vector<std::int64_t> sizes = kiln::test::quick_mode()
                                              ? std::vector<std::int64_t>{1024}
                                              : std::vector<std::int64_t>{4096, 8192};
  for (std::int64_t n : sizes) {
    GemmCase c;
    c.name = "square";
    c.M = c.N = c.K = n;
    c.tb = true;
    c.sample_rows = n >= 8192 ? 24 : 40;
    check_case(c);
    c.tb = false;
    c.epi = KILN_GEMM_EPILOGUE_BIAS_GELU;
    check_case(c);
  }
}

TEST_CASE("gemm: odd shapes (M, N, K in 1, 17, 127, 1000)", "[gemm]") {
  const std::int64_t dims[] = {1, 17, 127, 1000};
  const kiln_gemm_epilogue_t epilogues[] = {KILN_GEMM_EPILOGUE_BIAS_GELU, KILN_GEMM_EPILOGUE_NONE,
                                            KILN_GEMM_EPILOGUE_DGELU, KILN_GEMM_EPILOGUE_RESIDUAL};
  int i = 0;
  for (std::int64_t M : dims)
    for (std::int64_t N : dims)
      for (std::int64_t K : dims) {
        GemmCase c;
        c.name = "odd";
        c.M = M;
        c.N = N;
        c.K = K;
        c.ta = (i & 1) != 0;
        c.tb = (i & 2) != 0;
        c.epi = epilogues[(i >> 2) % 4];
        if (c.epi == KILN_GEMM_EPILOGUE_RESIDUAL) c.beta = 1.0f;
        ++i;
        // Packed rows of odd length: only cuBLASLt can take them (the hand-written kernels need
        // 16-byte rows and say so, checked in tests/cpu/gemm_capi_test.cpp).
        check_case(c, KILN_GEMM_BACKEND_CUBLASLT);
        // Rows padded to 16 bytes: every backend, the odd extents handled by TMA's
        // out-of-bounds fill and the kernels' predication.
        c.align = true;
        check_case(c);
      }
}

TEST_CASE(
    "gemm: leading dimensions past the packed ones, residual without bias, C read only "
    "when beta != 0",
    "[gemm]") {
  GemmCase c;
  c.name = "strided";
  c.M = 200;
  c.N = 136;
  c.K = 72;
  c.pad = 24;
  c.align = true;
  c.epi = KILN_GEMM_EPILOGUE_BIAS_GELU;
  check_case(c);
  c.ta = c.tb = true;
  c.epi = KILN_GEMM_EPILOGUE_RESIDUAL;
  c.beta = -1.0f;
  c.has_bias = false;
  check_case(c);
  c.epi = KILN_GEMM_EPILOGUE_BIAS_GRAD;
  c.beta = 1.0f;
  c.f32 = false;
  c.in_place = true;  // bf16 accumulation in place
  c.alpha = 1.0f;
  check_case(c);
}
