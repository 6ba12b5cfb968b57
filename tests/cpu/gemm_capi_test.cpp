// kiln_gemm's argument checks through the C ABI. They run before anything touches a device, so
// they work on the GPU-less CI: the context gets a dummy cuBLASLt handle and host "device"
// buffers that a correct implementation never dereferences (their contents are checked after).
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kiln/gemm.h"

namespace {

struct Fixture {
  // 16-byte aligned host storage standing in for device buffers; every call below is invalid,
  // so none of it may be read or written.
  alignas(256) std::uint8_t storage[8][4096];
  kiln_gemm_context_t* ctx = nullptr;

  Fixture() {
    std::memset(storage, 0x5A, sizeof(storage));
    // A dummy handle: creating a context must not use it.
    REQUIRE(kiln_gemm_context_create(&ctx, reinterpret_cast<cublasLtContext*>(0x10), storage[7],
                                     256) == KILN_STATUS_OK);
  }
  ~Fixture() { kiln_gemm_context_destroy(ctx); }

  // A valid-looking problem: D (32, 64) = A (32, 16) @ B^T with B (64, 16), bf16, epilogue none.
  kiln_gemm_params_t params() {
    kiln_gemm_params_t p;
    kiln_gemm_params_init(&p);
    p.m = 32;
    p.n = 64;
    p.k = 16;
    p.trans_b = 1;
    p.a = storage[0];
    p.b = storage[1];
    p.d = storage[2];
    return p;
  }

  // Expects `p` to be rejected as invalid with a message containing `text`, and nothing written.
  void expect_invalid(const kiln_gemm_params_t& p, const std::string& text) {
    kiln_clear_last_error();
    CHECK(kiln_gemm(ctx, &p, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
    const std::string message = kiln_last_error();
    INFO("message: " << message);
    CHECK(message.find(text) != std::string::npos);
    CHECK(message.rfind("kiln_gemm", 0) == 0);
    std::size_t changed = 0;
    for (int i = 0; i < 7; ++i)
      for (std::uint8_t byte : storage[i])
        changed += byte != 0x5A;
    CHECK(changed == 0);
    // kiln_gemm_select checks the same arguments first.
    kiln_gemm_backend_t b;
    CHECK(kiln_gemm_select(ctx, &p, &b) == KILN_STATUS_INVALID_ARGUMENT);
  }
};

}  // namespace

TEST_CASE("kiln_gemm_params_init sets the documented defaults", "[gemm_args]") {
  kiln_gemm_params_t p;
  std::memset(&p, 0x7F, sizeof(p));
  kiln_gemm_params_init(&p);
  CHECK(p.alpha == 1.0f);
  CHECK(p.beta == 0.0f);
  CHECK(p.cd_dtype == KILN_DTYPE_BF16);
  CHECK(p.epilogue == KILN_GEMM_EPILOGUE_NONE);
  CHECK(p.backend == KILN_GEMM_BACKEND_AUTO);
  CHECK(p.m == 0);
  CHECK(p.a == nullptr);
  CHECK(p.bias_grad == nullptr);
  CHECK(p.lda == 0);
  kiln_gemm_params_init(nullptr);  // harmless
}

TEST_CASE("kiln_gemm names its backends and epilogues", "[gemm_args]") {
  CHECK(std::string(kiln_gemm_backend_name(KILN_GEMM_BACKEND_AUTO)) == "auto");
  CHECK(std::string(kiln_gemm_backend_name(KILN_GEMM_BACKEND_CUBLASLT)) == "cublaslt");
  CHECK(std::string(kiln_gemm_backend_name(KILN_GEMM_BACKEND_SM90)) == "sm90");
  CHECK(std::string(kiln_gemm_backend_name(KILN_GEMM_BACKEND_SM80)) == "sm80");
  CHECK(std::string(kiln_gemm_epilogue_name(KILN_GEMM_EPILOGUE_BIAS_GELU)) == "bias_gelu");
  CHECK(std::string(kiln_gemm_epilogue_name(KILN_GEMM_EPILOGUE_BIAS_GRAD)) == "bias_grad");
  CHECK(std::string(kiln_gemm_epilogue_name(static_cast<kiln_gemm_epilogue_t>(42))) == "unknown");
}

TEST_CASE("kiln_gemm_context_create checks its arguments", "[gemm_args]") {
  alignas(256) static std::uint8_t ws[512];
  CHECK(kiln_gemm_context_create(nullptr, nullptr, ws, 256) == KILN_STATUS_INVALID_ARGUMENT);
  kiln_gemm_context_t* ctx = reinterpret_cast<kiln_gemm_context_t*>(0x1);
  CHECK(kiln_gemm_context_create(&ctx, nullptr, nullptr, 256) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(ctx == nullptr);
  CHECK(kiln_gemm_context_create(&ctx, nullptr, ws + 16, 256) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(kiln_last_error()).find("256-byte aligned") != std::string::npos);
  // No handle and no workspace is valid (hand-written backends only).
  REQUIRE(kiln_gemm_context_create(&ctx, nullptr, nullptr, 0) == KILN_STATUS_OK);
  kiln_gemm_context_destroy(ctx);
  kiln_gemm_context_destroy(nullptr);
}

TEST_CASE("kiln_gemm rejects bad shapes, pointers and options before touching memory",
          "[gemm_args]") {
  Fixture f;
  kiln_gemm_params_t p = f.params();

  CHECK(kiln_gemm(nullptr, &p, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(kiln_last_error()).find("context is null") != std::string::npos);
  CHECK(kiln_gemm(f.ctx, nullptr, nullptr) == KILN_STATUS_INVALID_ARGUMENT);

  p = f.params();
  p.m = 0;
  f.expect_invalid(p, "M, N, K must be >= 1");
  p = f.params();
  p.k = -5;
  f.expect_invalid(p, "M, N, K must be >= 1");
  p = f.params();
  p.n = std::int64_t{1} << 31;
  f.expect_invalid(p, "< 2^31");
  p = f.params();
  p.trans_a = 2;
  f.expect_invalid(p, "trans_a must be 0 or 1");
  p = f.params();
  p.cd_dtype = static_cast<kiln_dtype_t>(7);
  f.expect_invalid(p, "cd_dtype");
  p = f.params();
  p.epilogue = static_cast<kiln_gemm_epilogue_t>(9);
  f.expect_invalid(p, "unknown epilogue");
  p = f.params();
  p.backend = static_cast<kiln_gemm_backend_t>(8);
  f.expect_invalid(p, "unknown backend");
  p = f.params();
  p.alpha = std::numeric_limits<float>::quiet_NaN();
  f.expect_invalid(p, "finite");

  p = f.params();
  p.a = nullptr;
  f.expect_invalid(p, "a is null");
  p = f.params();
  p.d = f.storage[2] + 1;
  f.expect_invalid(p, "is not 2-byte aligned");
  p = f.params();
  p.cd_dtype = KILN_DTYPE_F32;
  p.d = f.storage[2] + 2;
  f.expect_invalid(p, "is not 4-byte aligned");

  p = f.params();
  p.lda = 8;  // rows of A hold K = 16
  f.expect_invalid(p, "lda 8 is shorter than a row of A (16)");
  p = f.params();
  p.ldb = 15;
  f.expect_invalid(p, "ldb 15 is shorter");
  p = f.params();
  p.ldd = 63;
  f.expect_invalid(p, "ldd 63 is shorter");

  p = f.params();
  p.beta = 1.0f;
  f.expect_invalid(p, "beta is 1 but c is null");
  p = f.params();
  p.beta = 1.0f;
  p.c = p.d;
  p.ldc = 72;
  f.expect_invalid(p, "in-place accumulation");
}

TEST_CASE("kiln_gemm rejects epilogues without their operands or in the wrong dtype",
          "[gemm_args]") {
  Fixture f;
  kiln_gemm_params_t p = f.params();
  p.epilogue = KILN_GEMM_EPILOGUE_BIAS;
  f.expect_invalid(p, "bias is null");

  p = f.params();
  p.epilogue = KILN_GEMM_EPILOGUE_BIAS_GELU;
  p.bias = f.storage[3];
  f.expect_invalid(p, "pre_gelu_out is null");
  p.pre_gelu_out = f.storage[4];
  p.ld_pre_gelu = 32;
  f.expect_invalid(p, "ld_pre_gelu 32 is shorter");

  p = f.params();
  p.epilogue = KILN_GEMM_EPILOGUE_DGELU;
  f.expect_invalid(p, "pre_gelu is null");

  p = f.params();
  p.epilogue = KILN_GEMM_EPILOGUE_RESIDUAL;
  f.expect_invalid(p, "residual as c");

  p = f.params();
  p.epilogue = KILN_GEMM_EPILOGUE_BIAS;
  p.bias = f.storage[3];
  p.cd_dtype = KILN_DTYPE_F32;
  f.expect_invalid(p, "needs bf16 C/D");

  p = f.params();
  p.epilogue = KILN_GEMM_EPILOGUE_BIAS_GRAD;
  f.expect_invalid(p, "bias_grad is null");
  p.bias_grad = f.storage[5];
  p.alpha = 0.5f;
  f.expect_invalid(p, "needs alpha = 1");
}

TEST_CASE("forcing a hand-written backend checks the 16-byte alignment its copies need",
          "[gemm_args]") {
  Fixture f;
  for (kiln_gemm_backend_t backend : {KILN_GEMM_BACKEND_SM90, KILN_GEMM_BACKEND_SM80}) {
    const std::string name = kiln_gemm_backend_name(backend);
    kiln_gemm_params_t p = f.params();
    p.backend = backend;
    p.k = 17;  // packed rows of A and B are 34 bytes
    f.expect_invalid(p, "the " + name + " backend needs lda * 2 bytes a multiple of 16 (lda = 17)");
    p.lda = 24;
    f.expect_invalid(p, "ldb * 2 bytes a multiple of 16 (ldb = 17)");

    p = f.params();
    p.backend = backend;
    p.n = 60;
    f.expect_invalid(p, "ldd * 2 bytes a multiple of 16 (ldd = 60)");

    p = f.params();
    p.backend = backend;
    p.a = f.storage[0] + 8;
    f.expect_invalid(p, "a 16-byte aligned");

    p = f.params();
    p.backend = backend;
    p.epilogue = KILN_GEMM_EPILOGUE_BIAS;
    p.bias = f.storage[3] + 2;
    f.expect_invalid(p, "bias 4-byte aligned");

    p = f.params();
    p.backend = backend;
    p.cd_dtype = KILN_DTYPE_F32;
    p.n = 62;
    f.expect_invalid(p, "ldd * 4 bytes a multiple of 16 (ldd = 62)");
  }
}

TEST_CASE("kiln_gemm_table_set wants a concrete backend", "[gemm_args]") {
  Fixture f;
  kiln_gemm_params_t p = f.params();
  CHECK(kiln_gemm_table_set(f.ctx, &p, KILN_GEMM_BACKEND_AUTO) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_gemm_table_save(f.ctx, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_gemm_table_load(nullptr, "x") == KILN_STATUS_INVALID_ARGUMENT);
  int available = 7;
  CHECK(kiln_gemm_backend_available(static_cast<kiln_gemm_backend_t>(5), &available) ==
        KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_gemm_backend_available(KILN_GEMM_BACKEND_AUTO, nullptr) ==
        KILN_STATUS_INVALID_ARGUMENT);
}
