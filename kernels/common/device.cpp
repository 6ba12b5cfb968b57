// kiln_device_count, kiln_get_device_info, kiln_get_library_versions, and the cached device facts.
#include "kernels/common/device.hpp"

#include <cublasLt.h>
#include <cudnn.h>
#include <nccl.h>

#include <array>
#include <cstdio>
#include <mutex>

#include "errors/capi.hpp"
#include "errors/check.hpp"

namespace kiln::impl {
namespace {

constexpr int kMaxDevices = 64;

int checked_device_count() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();  // do not leave the failure behind for a later launch check
    throw_cuda_error(error, "cudaGetDeviceCount(&count)", __FILE__, __LINE__);
  }
  KILN_CHECK(count > 0, Status::no_device, "no CUDA device: the runtime reports none");
  return count;
}

}  // namespace

const DeviceFacts& current_device_facts() {
  static std::array<DeviceFacts, kMaxDevices> facts;
  static std::array<std::once_flag, kMaxDevices> once;
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  KILN_CHECK(device >= 0 && device < kMaxDevices, Status::not_supported, "device ordinal ", device,
             " is beyond the ", kMaxDevices, " kiln supports");
  std::call_once(once[device], [device] {
    DeviceFacts f;
    f.ordinal = device;
    KILN_CUDA_CHECK(
        cudaDeviceGetAttribute(&f.compute_major, cudaDevAttrComputeCapabilityMajor, device));
    KILN_CUDA_CHECK(
        cudaDeviceGetAttribute(&f.compute_minor, cudaDevAttrComputeCapabilityMinor, device));
    KILN_CUDA_CHECK(
        cudaDeviceGetAttribute(&f.multiprocessors, cudaDevAttrMultiProcessorCount, device));
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&f.max_shared_memory_per_block_optin,
                                           cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&f.l2_cache_bytes, cudaDevAttrL2CacheSize, device));
    facts[device] = f;
  });
  return facts[device];
}

bool hopper_kernels_available() {
#if defined(KILN_HAS_SM90A)
  const DeviceFacts& f = current_device_facts();
  return f.compute_major == 9 && f.compute_minor == 0;
#else
  return false;
#endif
}

}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_device_count(int* count) {
  return kiln::impl::capi_guard([&] {
    KILN_CHECK_ARG(count != nullptr, "kiln_device_count: count is null");
    *count = 0;
    *count = kiln::impl::checked_device_count();
  });
}

kiln_status_t kiln_get_device_info(int ordinal, kiln_device_info_t* out) {
  return kiln::impl::capi_guard([&] {
    KILN_CHECK_ARG(out != nullptr, "kiln_get_device_info: out is null");
    const int count = kiln::impl::checked_device_count();
    KILN_CHECK_ARG(ordinal >= 0 && ordinal < count, "kiln_get_device_info: device ", ordinal,
                   " does not exist (", count, " device(s))");
    cudaDeviceProp p{};
    KILN_CUDA_CHECK(cudaGetDeviceProperties(&p, ordinal));
    kiln_device_info_t info{};
    std::snprintf(info.name, sizeof(info.name), "%s", p.name);
    info.ordinal = ordinal;
    info.compute_major = p.major;
    info.compute_minor = p.minor;
    info.multiprocessors = p.multiProcessorCount;
    info.total_memory_bytes = p.totalGlobalMem;
    info.l2_cache_bytes = static_cast<size_t>(p.l2CacheSize);
    info.shared_memory_per_block_optin = p.sharedMemPerBlockOptin;
    info.memory_bus_width_bits = p.memoryBusWidth;
    // Clock rates left cudaDeviceProp in CUDA 13; the attributes remain (0 if unreported).
    if (cudaDeviceGetAttribute(&info.clock_rate_khz, cudaDevAttrClockRate, ordinal) != cudaSuccess)
      info.clock_rate_khz = 0;
    if (cudaDeviceGetAttribute(&info.memory_clock_rate_khz, cudaDevAttrMemoryClockRate, ordinal) !=
        cudaSuccess)
      info.memory_clock_rate_khz = 0;
    cudaGetLastError();
    *out = info;
  });
}

kiln_status_t kiln_get_library_versions(kiln_library_versions_t* out) {
  return kiln::impl::capi_guard([&] {
    KILN_CHECK_ARG(out != nullptr, "kiln_get_library_versions: out is null");
    kiln_library_versions_t v{};
    if (cudaRuntimeGetVersion(&v.cuda_runtime) != cudaSuccess) v.cuda_runtime = 0;
    if (cudaDriverGetVersion(&v.cuda_driver) != cudaSuccess) v.cuda_driver = 0;
    cudaGetLastError();
    v.cublaslt = static_cast<int>(cublasLtGetVersion());
    v.cudnn_compiled = CUDNN_VERSION;
    v.cudnn_loaded = static_cast<int>(cudnnGetVersion());
    v.nccl_compiled = NCCL_VERSION_CODE;
    if (ncclGetVersion(&v.nccl_loaded) != ncclSuccess) v.nccl_loaded = 0;
    *out = v;
  });
}

}  // extern "C"
