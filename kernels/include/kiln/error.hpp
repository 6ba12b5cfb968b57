// The C++ face of kiln's error model: kiln::Error carries a Status and a message; the thin C++
// wrappers in kiln's public headers turn a failed C call into a thrown kiln::Error.
#pragma once

#include <stdexcept>
#include <string>

#include "kiln/core.h"
#include "kiln/export.h"

namespace kiln {

enum class Status : int {
  ok = KILN_STATUS_OK,
  invalid_argument = KILN_STATUS_INVALID_ARGUMENT,
  not_supported = KILN_STATUS_NOT_SUPPORTED,
  no_device = KILN_STATUS_NO_DEVICE,
  cuda_error = KILN_STATUS_CUDA_ERROR,
  cublas_error = KILN_STATUS_CUBLAS_ERROR,
  cudnn_error = KILN_STATUS_CUDNN_ERROR,
  nccl_error = KILN_STATUS_NCCL_ERROR,
  out_of_memory = KILN_STATUS_OUT_OF_MEMORY,
  io_error = KILN_STATUS_IO_ERROR,
  data_error = KILN_STATUS_DATA_ERROR,
  timeout = KILN_STATUS_TIMEOUT,
  internal_error = KILN_STATUS_INTERNAL_ERROR,
};

inline const char* status_name(Status s) {
  return kiln_status_name(static_cast<kiln_status_t>(s));
}

// Thrown by kiln's C++ code. what() is the whole message: the problem, then the failed check
// and its place in kiln's sources when known, e.g.
//   "layernorm_fwd: C must be > 0 (got 0) [C > 0 at kernels/norm/norm.cpp:41]"
class KILN_API Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message, const char* expression = nullptr,
        const char* file = nullptr, int line = 0);

  Status status() const noexcept { return status_; }
  // The problem alone, without the check and place.
  const std::string& message() const noexcept { return message_; }
  const std::string& expression() const noexcept { return expression_; }
  const std::string& file() const noexcept { return file_; }
  int line() const noexcept { return line_; }

 private:
  Status status_;
  std::string message_, expression_, file_;
  int line_;
};

// Throws kiln::Error with the calling thread's last kiln message when `status` is not OK.
inline void check(kiln_status_t status) {
  if (status != KILN_STATUS_OK) throw Error(static_cast<Status>(status), kiln_last_error());
}

}  // namespace kiln
