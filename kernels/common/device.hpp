// Device facts the kernels' dispatchers need, read once per device and cached.
#pragma once

#include <cuda_runtime_api.h>

namespace kiln::impl {

struct DeviceFacts {
  int ordinal = 0;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  int max_shared_memory_per_block_optin = 0;
  int l2_cache_bytes = 0;
};

// Facts of the calling thread's current device. Throws kiln::Error (no_device, cuda_error).
const DeviceFacts& current_device_facts();

// True on Hopper (compute capability 9.0) when this build carries the sm_90a kernels.
bool hopper_kernels_available();

}  // namespace kiln::impl
