// kiln::Device: one GPU as the runtime uses it: the compute stream, a cuBLASLt handle with its
// workspace, and the device's properties. Everything kiln launches for a model goes through one.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string_view>

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

// The datasheet's dense (no sparsity) bf16 tensor-core peak of a device with fp32 accumulation, in
// FLOP/s: the denominator of MFU (PERF.md's convention). Looked up in a table of the data center
// and consumer GPUs kiln is run on (H100 SXM / PCIe / NVL, H200 / NVL, GH200, A100, A30, A10,
// L40S, L40, L4, RTX 4090, RTX 3090; runtime/device_peak.cpp cites each datasheet) by the words
// of the device's name and its compute capability. 0 for a device the table does not hold: MFU
// is then not reported, rather than measured against a made-up peak.
KILN_API double datasheet_bf16_flops(std::string_view name, int compute_major, int compute_minor);
KILN_API double datasheet_bf16_flops(const kiln_device_info_t& info);

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
