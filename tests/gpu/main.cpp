// The GPU tests' main: without a CUDA device (or driver) it says so with the marker line
// "[kiln-no-device] ..." and returns 77. Only that pair means "skipped": ctest matches the marker
// (SKIP_REGULAR_EXPRESSION, tests/CMakeLists.txt) and scripts/gpu-window.sh also requires that
// nvidia-smi lists no GPU, so an exit code of 77 from anything else (77 failed assertions, a
// crash handler) is a failure, never a skip.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cstdio>

#include "tests/common/support.hpp"

int main(int argc, char** argv) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    std::printf("[kiln-no-device] no CUDA device (%s): the GPU tests are skipped\n",
                error != cudaSuccess ? cudaGetErrorString(error) : "the runtime reports none");
    return 77;
  }
  kiln::test::seed();  // print the seed before any output of the tests
  return Catch::Session().run(argc, argv);
}
