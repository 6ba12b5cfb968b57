// A typed device allocation for GPU tests: upload, download, and poisoning with NaN (all bits
// set is NaN in bf16 and fp32) so an element the kernel fails to write cannot pass.
//
// upload() and poison() wait for the device before returning: cudaMemcpy from pageable memory
// and cudaMemset run on the legacy default stream, which does not order work on kiln's
// non-blocking streams, so without the wait a kernel launched next could race with them.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

#include "errors/check.hpp"

namespace kiln::test {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    // Never a zero-byte allocation, so a size-0 tensor still has a distinct valid pointer.
    KILN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), count ? count * sizeof(T) : 256));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), count_(o.count_) {
    o.ptr_ = nullptr;
    o.count_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(count_, o.count_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }

  void upload(const std::vector<T>& host) {
    KILN_CHECK_ARG(host.size() == count_, "upload of ", host.size(), " into ", count_);
    KILN_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice));
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
    KILN_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }
  void poison() {
    KILN_CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes()));
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  T* ptr_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace kiln::test
