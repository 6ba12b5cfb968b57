// The GPU tests' main: without a CUDA device (or driver) it says so and returns 77, which ctest
// reports as skipped (SKIP_RETURN_CODE), never as passed.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cstdio>

#include "tests/common/support.hpp"

int main(int argc, char** argv) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    std::printf("no CUDA device (%s): the GPU tests are skipped\n",
                error != cudaSuccess ? cudaGetErrorString(error) : "the runtime reports none");
    return 77;
  }
  kiln::test::seed();  // print the seed before any output of the tests
  return Catch::Session().run(argc, argv);
}
