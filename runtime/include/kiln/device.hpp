// kiln::Device: one GPU as the runtime uses it: the compute stream, a cuBLASLt handle with its
// workspace, and the device's properties. Everything kiln launches for a model goes through one.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "kiln/core.h"
#include "kiln/error.hpp"
#include "kiln/export.h"

struct cublasLtContext;  // cublasLtHandle_t is cublasLtContext*; kiln's headers need no cuBLAS

namespace kiln {

// The number of CUDA devices. Throws kiln::Error(Status::no_device) when there are none or no
// usable driver; the message starts with "no CUDA device" and carries the CUDA runtime's text.
KILN_API int device_count();

// The properties of device `ordinal`. Throws like device_count().
KILN_API kiln_device_info_t device_info(int ordinal);

class KILN_API Device {
 public:
  // The default cuBLASLt workspace: 32 MiB, what cuBLASLt's heuristics need on Hopper.
  static constexpr std::size_t kDefaultWorkspaceBytes = std::size_t{32} << 20;

  // Makes `ordinal` current on the calling thread, creates a non-blocking compute stream, a
  // cuBLASLt handle and its workspace. Throws kiln::Error (no_device, out_of_memory, ...).
  explicit Device(int ordinal = 0, std::size_t workspace_bytes = kDefaultWorkspaceBytes);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  int ordinal() const noexcept { return info_.ordinal; }
  const kiln_device_info_t& info() const noexcept { return info_; }
  cudaStream_t stream() const noexcept { return stream_; }
  cublasLtContext* cublaslt() const noexcept { return cublaslt_; }
  void* workspace() const noexcept { return workspace_; }
  std::size_t workspace_bytes() const noexcept { return workspace_bytes_; }

  // Makes this device current on the calling thread (each thread has its own current device).
  void make_current() const;
  // Waits for all work on the compute stream; throws kiln::Error if any of it failed.
  void synchronize() const;

 private:
  void release() noexcept;

  kiln_device_info_t info_{};
  cudaStream_t stream_ = nullptr;
  cublasLtContext* cublaslt_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
};

}  // namespace kiln
