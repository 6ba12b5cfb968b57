// The fused classifier's C ABI rejects bad arguments before touching any device, so these run
// (and must pass) on a machine without a GPU. The pointers are never dereferenced.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include "kiln/classifier.h"

namespace {

void* fake(std::uintptr_t address) {
  return reinterpret_cast<void*>(address);
}

struct Args {
  float* losses = static_cast<float*>(fake(0x100000));
  void* dlogits = fake(0x200000);
  const void* logits = fake(0x200000);  // in place
  const int32_t* targets = static_cast<const int32_t*>(fake(0x900000));
  int64_t N = 4, V = 50257, Vp = 50304;
  kiln_dtype_t dtype = KILN_DTYPE_BF16;
  kiln_status_t call() const {
    return kiln_classifier_fwd_bwd(losses, dlogits, logits, targets, N, V, Vp, 0.25f, -100, dtype,
                                   nullptr);
  }
};

void expect_invalid(const Args& a, const std::string& message) {
  kiln_clear_last_error();
  CHECK(a.call() == KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains(message));
  CHECK_THAT(std::string(kiln_last_error()), Catch::StartsWith("kiln_classifier_fwd_bwd: "));
}

}  // namespace

TEST_CASE("kiln_classifier_fwd_bwd rejects bad shapes, dtypes and pointers", "[classifier]") {
  Args a;
  a.N = -1;
  expect_invalid(a, "N must be in [0, 2^31)");
  a = Args{};
  a.N = int64_t{1} << 31;
  expect_invalid(a, "N must be in [0, 2^31)");
  a = Args{};
  a.V = 0;
  expect_invalid(a, "V must be >= 1");
  a = Args{};
  a.Vp = a.V - 1;
  expect_invalid(a, "the row stride Vp (50256) must be >= V (50257)");
  a = Args{};
  a.V = a.Vp = int64_t{1} << 31;
  expect_invalid(a, "Vp must be < 2^31 - 64");
  a = Args{};
  a.dtype = static_cast<kiln_dtype_t>(7);
  expect_invalid(a, "unknown dtype 7");
  a = Args{};
  a.logits = a.dlogits = nullptr;
  expect_invalid(a, "logits is null");
  a = Args{};
  a.logits = a.dlogits = fake(0x200002);
  expect_invalid(a, "is not 16-byte aligned");
  a = Args{};
  a.dlogits = fake(0x200010);  // a different, overlapping buffer
  expect_invalid(a, "dlogits must either equal logits (in place) or not overlap it");
  a = Args{};
  a.targets = nullptr;
  expect_invalid(a, "targets is null");
  a = Args{};
  a.losses = static_cast<float*>(fake(0x100002));
  expect_invalid(a, "losses");

  // f32 logits are a valid request this build does not serve.
  a = Args{};
  a.dtype = KILN_DTYPE_F32;
  kiln_clear_last_error();
  CHECK(a.call() == KILN_STATUS_NOT_SUPPORTED);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("KILN_DTYPE_F32 is not served"));
}

TEST_CASE("kiln_classifier_fwd_bwd with N = 0 is a no-op that needs no device", "[classifier]") {
  Args a;
  a.N = 0;
  a.losses = nullptr;
  a.logits = a.dlogits = nullptr;
  a.targets = nullptr;
  CHECK(a.call() == KILN_STATUS_OK);
  // Separate, non-overlapping output buffers pass the checks (and would launch with rows).
  Args b;
  b.N = 0;
  b.dlogits = fake(0x20000000);
  CHECK(b.call() == KILN_STATUS_OK);
}

TEST_CASE("kiln_classifier_mean_loss rejects bad arguments", "[classifier]") {
  const auto* losses = static_cast<const float*>(fake(0x100000));
  const auto* targets = static_cast<const int32_t*>(fake(0x900000));
  auto* mean = static_cast<float*>(fake(0x300000));
  CHECK(kiln_classifier_mean_loss(nullptr, losses, targets, 4, -100, nullptr) ==
        KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()),
             Catch::StartsWith("kiln_classifier_mean_loss: mean is null"));
  CHECK(kiln_classifier_mean_loss(mean, losses, targets, -2, -100, nullptr) ==
        KILN_STATUS_INVALID_ARGUMENT);
  CHECK(kiln_classifier_mean_loss(mean, nullptr, targets, 4, -100, nullptr) ==
        KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("losses is null"));
  CHECK(kiln_classifier_mean_loss(mean, losses, static_cast<const int32_t*>(fake(0x900001)), 4,
                                  -100, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("targets"));
}

TEST_CASE("the C++ wrapper throws kiln::Error with the C call's status", "[classifier]") {
  try {
    kiln::classifier_fwd_bwd(nullptr, nullptr, nullptr, nullptr, 4, 0, 8, 1.0f, -100, nullptr);
    FAIL("no exception");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::invalid_argument);
    CHECK_THAT(std::string(e.what()), Catch::Contains("V must be >= 1"));
  }
}
