// Device handling on a real GPU.
#include <catch2/catch.hpp>

#include <string>

#include "kernels/common/device.hpp"
#include "kiln/kiln.hpp"

TEST_CASE("kiln::Device opens each device with a stream, a cuBLASLt handle and a workspace",
          "[device][smoke]") {
  const int count = kiln::device_count();
  REQUIRE(count > 0);
  for (int i = 0; i < count; ++i) {
    kiln::Device device(i);
    const kiln_device_info_t& info = device.info();
    CHECK(info.ordinal == i);
    CHECK(std::string(info.name).size() > 0);
    CHECK(info.multiprocessors > 0);
    CHECK(info.compute_major >= 8);
    CHECK(info.total_memory_bytes > (size_t{1} << 30));
    CHECK(device.stream() != nullptr);
    CHECK(device.cublaslt() != nullptr);
    CHECK(reinterpret_cast<std::uintptr_t>(device.workspace()) % 256 == 0);
    CHECK_NOTHROW(device.synchronize());
  }
}

TEST_CASE("the cached device facts agree with the properties", "[device]") {
  kiln::Device device(0);
  const auto& facts = kiln::impl::current_device_facts();
  CHECK(facts.compute_major == device.info().compute_major);
  CHECK(facts.multiprocessors == device.info().multiprocessors);
  CHECK(facts.max_shared_memory_per_block_optin > 48 * 1024);
}

TEST_CASE("a bad ordinal is an argument error, not a crash", "[device][api_error]") {
  kiln_device_info_t info{};
  CHECK(kiln_get_device_info(kiln::device_count(), &info) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THROWS_AS(kiln::Device(-1), kiln::Error);
}
