// The launch check: a failed launch becomes a kiln::Error naming the launch site.
#include <catch2/catch.hpp>

#include <string>

#include "errors/check.hpp"

namespace {

__global__ void write_index(int* out) {
  out[threadIdx.x] = threadIdx.x;
}

}  // namespace

TEST_CASE("KILN_LAUNCH_CHECK reports an invalid launch configuration",
          "[launch_check][smoke][api_error]") {
  int* out = nullptr;
  REQUIRE(cudaMalloc(&out, 4096 * sizeof(int)) == cudaSuccess);
  write_index<<<1, 4096>>>(out);  // over the 1024 threads a block may have
  try {
    KILN_LAUNCH_CHECK(nullptr);
    FAIL("no exception");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::cuda_error);
    CHECK_THAT(e.message(),
               Catch::StartsWith("kernel launch failed: cudaErrorInvalidConfiguration"));
    CHECK_THAT(e.file(), Catch::EndsWith("launch_check_test.cu"));
  }
  // The error is not sticky: the next launch works, also with sync-after-launch on.
  kiln_set_sync_after_launch(1);
  write_index<<<1, 32>>>(out);
  CHECK_NOTHROW(KILN_LAUNCH_CHECK(nullptr));
  kiln_set_sync_after_launch(0);
  cudaFree(out);
}
