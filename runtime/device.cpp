#include "kiln/device.hpp"

#include <cublasLt.h>

#include "errors/check.hpp"
#include "errors/check_libs.hpp"

namespace kiln {

int device_count() {
  int count = 0;
  check(kiln_device_count(&count));
  return count;
}

kiln_device_info_t device_info(int ordinal) {
  kiln_device_info_t info{};
  check(kiln_get_device_info(ordinal, &info));
  return info;
}

Device::Device(int ordinal, std::size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  info_ = device_info(ordinal);
  try {
    KILN_CUDA_CHECK(cudaSetDevice(ordinal));
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    cublasLtHandle_t handle = nullptr;
    KILN_CUBLAS_CHECK(cublasLtCreate(&handle));
    cublaslt_ = handle;
    if (workspace_bytes_ > 0) KILN_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
  } catch (...) {
    release();
    throw;
  }
}

Device::~Device() {
  release();
}

void Device::release() noexcept {
  // Must not throw; releases in reverse order and ignores the errors of a dying context.
  if (workspace_) cudaFree(workspace_);
  if (cublaslt_) cublasLtDestroy(cublaslt_);
  if (stream_) cudaStreamDestroy(stream_);
  workspace_ = nullptr;
  cublaslt_ = nullptr;
  stream_ = nullptr;
}

void Device::make_current() const {
  KILN_CUDA_CHECK(cudaSetDevice(info_.ordinal));
}

void Device::synchronize() const {
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace kiln
