// Device detection and versions. Meaningful on both kinds of machine: without a GPU the calls must
// fail with NO_DEVICE and a message that says so; with one they must describe it.
#include <catch2/catch.hpp>

#include <string>

#include "kiln/kiln.hpp"

TEST_CASE("kiln_device_count reports devices or says clearly there are none", "[device]") {
  int count = -1;
  const kiln_status_t status = kiln_device_count(&count);
  if (status == KILN_STATUS_OK) {
    CHECK(count > 0);
  } else {
    CHECK(status == KILN_STATUS_NO_DEVICE);
    CHECK(count == 0);
    CHECK_THAT(std::string(kiln_last_error()), Catch::StartsWith("no CUDA device: "));
  }
}

TEST_CASE("kiln::Device either opens device 0 or throws no_device", "[device]") {
  int count = 0;
  if (kiln_device_count(&count) == KILN_STATUS_OK) {
    kiln::Device device(0);
    CHECK(device.stream() != nullptr);
    CHECK(device.cublaslt() != nullptr);
    CHECK(device.workspace_bytes() == kiln::Device::kDefaultWorkspaceBytes);
    CHECK(std::string(device.info().name).size() > 0);
    CHECK_NOTHROW(device.synchronize());
  } else {
    try {
      kiln::Device device(0);
      FAIL("opened a device where none exists");
    } catch (const kiln::Error& e) {
      CHECK(e.status() == kiln::Status::no_device);
      CHECK_THAT(std::string(e.what()), Catch::StartsWith("no CUDA device"));
    }
    CHECK_THROWS_AS(kiln::device_count(), kiln::Error);
  }
}

TEST_CASE("device info rejects a null output and ordinals that do not exist", "[device]") {
  CHECK(kiln_get_device_info(0, nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  kiln_device_info_t info{};
  const kiln_status_t status = kiln_get_device_info(1 << 20, &info);
  CHECK((status == KILN_STATUS_INVALID_ARGUMENT || status == KILN_STATUS_NO_DEVICE));
  if (status == KILN_STATUS_INVALID_ARGUMENT)
    CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("does not exist"));
}

TEST_CASE("library versions are the ones kiln was built for", "[device]") {
  kiln_library_versions_t v{};
  REQUIRE(kiln_get_library_versions(&v) == KILN_STATUS_OK);
  CHECK(v.cuda_runtime >= 13000);
  CHECK(v.cublaslt >= 130000);
  CHECK(v.cudnn_compiled >= 90000);
  CHECK(v.cudnn_loaded / 10000 == v.cudnn_compiled / 10000);  // same major: cuDNN's ABI rule
  CHECK(v.nccl_compiled >= 21800);
  CHECK(v.nccl_loaded / 10000 == v.nccl_compiled / 10000);
  CHECK(std::string(kiln_version_string()) == KILN_VERSION_STRING);
}
