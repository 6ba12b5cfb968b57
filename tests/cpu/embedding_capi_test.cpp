// The embedding's C ABI rejects bad arguments before touching any device, so these run (and
// must pass) on a machine without a GPU. The pointers are never dereferenced.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include "kiln/embedding.h"

namespace {

void* fake(std::uintptr_t address) {
  return reinterpret_cast<void*>(address);
}

struct Fwd {
  void* out = fake(0x1000000);
  const int32_t* tokens = static_cast<const int32_t*>(fake(0x2000000));
  const void* wte = fake(0x3000000);
  const void* wpe = fake(0x4000000);
  int64_t B = 4, T = 64, C = 768, V = 50257, maxT = 1024;
  kiln_dtype_t dtype = KILN_DTYPE_BF16;
  kiln_status_t call() const {
    return kiln_embedding_fwd(out, tokens, wte, wpe, B, T, C, V, maxT, dtype, nullptr);
  }
};

struct Bwd {
  float* dwte = static_cast<float*>(fake(0x10000000));
  float* dwpe = static_cast<float*>(fake(0x20000000));
  const void* dout = fake(0x30000000);
  const int32_t* tokens = static_cast<const int32_t*>(fake(0x40000000));
  int64_t B = 4, T = 64, C = 768, V = 50257, maxT = 1024;
  void* workspace = fake(0x50000000);
  size_t workspace_bytes = size_t{1} << 30;
  kiln_dtype_t dtype = KILN_DTYPE_BF16;
  kiln_status_t call() const {
    return kiln_embedding_bwd(dwte, dwpe, dout, tokens, B, T, C, V, maxT, workspace,
                              workspace_bytes, dtype, nullptr);
  }
};

template <typename Call>
void expect(const Call& c, kiln_status_t status, const std::string& prefix,
            const std::string& message) {
  kiln_clear_last_error();
  CHECK(c.call() == status);
  CHECK_THAT(std::string(kiln_last_error()), Catch::StartsWith(prefix));
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains(message));
}

}  // namespace

TEST_CASE("kiln_embedding_fwd rejects bad shapes, dtypes and pointers", "[embedding]") {
  const auto invalid = KILN_STATUS_INVALID_ARGUMENT;
  const std::string op = "kiln_embedding_fwd: ";
  Fwd a;
  a.C = 100;
  expect(a, invalid, op, "C must be a positive multiple of 8");
  a = Fwd{};
  a.T = 2048;
  expect(a, invalid, op, "T (2048) must be <= maxT (1024)");
  a = Fwd{};
  a.B = int64_t{1} << 26;
  expect(a, invalid, op, "B * T must be < 2^31");
  a = Fwd{};
  a.V = 0;
  expect(a, invalid, op, "V must be in [1, 2^31 - 1)");
  a = Fwd{};
  a.tokens = nullptr;
  expect(a, invalid, op, "tokens is null");
  a = Fwd{};
  a.wte = fake(0x3000008);
  expect(a, invalid, op, "wte");
  a = Fwd{};
  a.out = nullptr;
  expect(a, invalid, op, "out is null");
  a = Fwd{};
  a.dtype = KILN_DTYPE_F32;
  expect(a, KILN_STATUS_NOT_SUPPORTED, op, "KILN_DTYPE_F32 is not served");
  a = Fwd{};
  a.B = 0;
  a.out = nullptr;
  CHECK(a.call() == KILN_STATUS_OK);  // no tokens: a no-op that needs no device
  // No position table: wpe = NULL, and maxT is not read (the next check to fail is out's).
  a = Fwd{};
  a.wpe = nullptr;
  a.maxT = 0;
  a.out = nullptr;
  expect(a, invalid, op, "out is null");
}

TEST_CASE("kiln_embedding_bwd rejects bad arguments before it needs a device", "[embedding]") {
  const auto invalid = KILN_STATUS_INVALID_ARGUMENT;
  const std::string op = "kiln_embedding_bwd: ";
  Bwd a;
  a.C = 0;
  expect(a, invalid, op, "C must be a positive multiple of 8");
  a = Bwd{};
  a.maxT = 0;
  expect(a, invalid, op, "maxT must be >= 1");
  a = Bwd{};
  a.dwte = nullptr;
  expect(a, invalid, op, "dwte is null");
  a = Bwd{};
  a.dwpe = static_cast<float*>(fake(0x20000004));
  expect(a, invalid, op, "dwpe");
  a = Bwd{};
  a.workspace = nullptr;
  expect(a, invalid, op, "workspace is null");
  a = Bwd{};
  a.workspace = fake(0x50000010);
  expect(a, invalid, op, "is not 256-byte aligned");
  a = Bwd{};
  a.dwpe = a.dwte + 768;
  expect(a, invalid, op, "dwte and dwpe must not overlap");
  // No position table: dwpe = NULL, and maxT is not read (the next check to fail is dout's).
  a = Bwd{};
  a.dwpe = nullptr;
  a.maxT = 0;
  a.dout = nullptr;
  expect(a, invalid, op, "dout is null");
  a = Bwd{};
  a.dtype = KILN_DTYPE_F32;
  expect(a, KILN_STATUS_NOT_SUPPORTED, op, "not served");
  a = Bwd{};
  a.T = 0;
  a.workspace = nullptr;
  CHECK(a.call() == KILN_STATUS_OK);
}

TEST_CASE("kiln_embedding_bwd_workspace_size checks, then asks the device", "[embedding]") {
  CHECK(kiln_embedding_bwd_workspace_size(4, 64, 50257, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  size_t bytes = 123;
  CHECK(kiln_embedding_bwd_workspace_size(-1, 64, 50257, &bytes) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(bytes == 0);
  CHECK(kiln_embedding_bwd_workspace_size(4, 64, 0, &bytes) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_embedding_bwd_workspace_size(0, 64, 50257, &bytes) == KILN_STATUS_OK);
  CHECK(bytes == 0);
  // With tokens the size depends on the device's sort tuning: a size with a device, NO_DEVICE
  // (saying so) without one.
  const kiln_status_t s = kiln_embedding_bwd_workspace_size(4, 64, 50257, &bytes);
  if (s == KILN_STATUS_OK) {
    CHECK(bytes >= 4 * 4 * 64 * sizeof(int32_t));
  } else {
    CHECK(s == KILN_STATUS_NO_DEVICE);
    CHECK_THAT(std::string(kiln_last_error()), Catch::StartsWith("no CUDA device"));
  }
}
