// The error model: kiln::Error, the check macros, the C ABI guard and its per-thread message.
#include <catch2/catch.hpp>

#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "errors/capi.hpp"
#include "errors/check.hpp"
#include "kiln/kiln.hpp"

using kiln::Error;
using kiln::Status;

namespace {

void needs_positive(int c) {
  KILN_CHECK_ARG(c > 0, "op: C must be > 0 (got ", c, ")");
}

}  // namespace

TEST_CASE("KILN_CHECK_ARG throws an Error naming the problem, the check and its place", "[error]") {
  try {
    needs_positive(-3);
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.status() == Status::invalid_argument);
    CHECK(e.message() == "op: C must be > 0 (got -3)");
    CHECK(e.expression() == "c > 0");
    CHECK(e.line() > 0);
    CHECK_THAT(e.file(), Catch::EndsWith("error_test.cpp"));
    CHECK_THAT(std::string(e.what()), Catch::StartsWith("op: C must be > 0 (got -3) [c > 0 at "));
  }
  CHECK_NOTHROW(needs_positive(1));
}

TEST_CASE("KILN_CHECK_PTR rejects null and misaligned pointers", "[error]") {
  alignas(16) static float storage[8];
  auto check = [](const float* p) { KILN_CHECK_PTR(p, 16, "op"); };
  CHECK_NOTHROW(check(storage));
  CHECK_THROWS_WITH(check(nullptr), Catch::Contains("op: p is null"));
  CHECK_THROWS_WITH(check(storage + 1), Catch::Contains("is not 16-byte aligned"));
}

TEST_CASE("CUDA errors map to statuses; no-device errors say so", "[error]") {
  CHECK(kiln::impl::status_of(cudaErrorNoDevice) == Status::no_device);
  CHECK(kiln::impl::status_of(cudaErrorInsufficientDriver) == Status::no_device);
  CHECK(kiln::impl::status_of(cudaErrorMemoryAllocation) == Status::out_of_memory);
  CHECK(kiln::impl::status_of(cudaErrorIllegalAddress) == Status::cuda_error);
  try {
    KILN_CUDA_CHECK(cudaErrorInsufficientDriver);
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.status() == Status::no_device);
    CHECK_THAT(e.message(), Catch::StartsWith("no CUDA device: cudaErrorInsufficientDriver: "));
  }
  try {
    KILN_CUDA_CHECK(cudaErrorInvalidValue);
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.status() == Status::cuda_error);
    CHECK_THAT(e.message(), Catch::StartsWith("cudaErrorInvalidValue: "));
    CHECK(e.expression() == "cudaErrorInvalidValue");
  }
}

TEST_CASE("capi_guard turns each exception into a status and keeps the message", "[error]") {
  using kiln::impl::capi_guard;
  kiln_clear_last_error();
  CHECK(capi_guard([] {}) == KILN_STATUS_OK);
  CHECK(std::string(kiln_last_error()).empty());

  CHECK(capi_guard([] { throw Error(Status::io_error, "cannot open x.bin"); }) ==
        KILN_STATUS_IO_ERROR);
  CHECK(std::string(kiln_last_error()) == "cannot open x.bin");

  CHECK(capi_guard([] { throw std::bad_alloc(); }) == KILN_STATUS_OUT_OF_MEMORY);
  CHECK(std::string(kiln_last_error()) == "out of host memory");

  CHECK(capi_guard([] { throw std::logic_error("oops"); }) == KILN_STATUS_INTERNAL_ERROR);
  CHECK(std::string(kiln_last_error()) == "internal error: oops");

  CHECK(capi_guard([] { throw 42; }) == KILN_STATUS_INTERNAL_ERROR);

  // A later success leaves the last failure's message in place (as errno does) until cleared.
  CHECK(capi_guard([] {}) == KILN_STATUS_OK);
  CHECK(std::string(kiln_last_error()) == "internal error: unknown exception");
  kiln_clear_last_error();
  CHECK(std::string(kiln_last_error()).empty());
}

TEST_CASE("the last error is kept per thread", "[error]") {
  kiln_clear_last_error();
  REQUIRE(kiln_get_library_versions(nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  const std::string mine = kiln_last_error();
  CHECK_THAT(mine, Catch::Contains("kiln_get_library_versions: out is null"));
  std::string other_before, other_after;
  std::thread t([&] {
    other_before = kiln_last_error();
    kiln_device_count(nullptr);
    other_after = kiln_last_error();
  });
  t.join();
  CHECK(other_before.empty());
  CHECK_THAT(other_after, Catch::Contains("kiln_device_count: count is null"));
  CHECK(std::string(kiln_last_error()) == mine);
}

TEST_CASE("messages name kiln's sources relative to the project root", "[error]") {
  REQUIRE(kiln_get_library_versions(nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains(" at kernels/common/device.cpp:"));
}

TEST_CASE("kiln::check throws the C call's status and message", "[error]") {
  try {
    kiln::check(kiln_get_library_versions(nullptr));
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.status() == Status::invalid_argument);
    CHECK_THAT(std::string(e.what()), Catch::Contains("out is null"));
  }
  CHECK_NOTHROW(kiln::check(KILN_STATUS_OK));
}

TEST_CASE("every status has its own name", "[error]") {
  std::set<std::string> names;
  for (int s = KILN_STATUS_OK; s <= KILN_STATUS_INTERNAL_ERROR; ++s) {
    const std::string name = kiln_status_name(static_cast<kiln_status_t>(s));
    CHECK_THAT(name, Catch::StartsWith("KILN_STATUS_"));
    CHECK(name != "KILN_STATUS_UNKNOWN");
    names.insert(name);
  }
  CHECK(names.size() == KILN_STATUS_INTERNAL_ERROR + 1);
  CHECK(std::string(kiln_status_name(static_cast<kiln_status_t>(999))) == "KILN_STATUS_UNKNOWN");
}

TEST_CASE("the sync-after-launch debug switch toggles", "[error]") {
  const int before = kiln_sync_after_launch();
  kiln_set_sync_after_launch(1);
  CHECK(kiln_sync_after_launch() == 1);
  kiln_set_sync_after_launch(0);
  CHECK(kiln_sync_after_launch() == 0);
  kiln_set_sync_after_launch(before);
}
