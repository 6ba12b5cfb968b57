// Which of kiln's own kernel paths a GPU test must see run (issue 12): on compute capability 9.0
// with a build holding the sm_90a kernels, the sm_90a and sm_80 GEMM and attention paths must
// all be available. A path that reports itself unavailable there fails the test instead of being
// skipped, so a GPU window cannot pass without exercising them.
#pragma once

#include <cuda_runtime_api.h>

namespace kiln::test {

inline bool hopper_paths_required() {
#if defined(KILN_TEST_EXPECT_SM90A)
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
    return false;
  return major == 9 && minor == 0;
#else
  return false;
#endif
}

}  // namespace kiln::test
