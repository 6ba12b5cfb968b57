// Checks for the CUDA libraries kiln calls: cuBLASLt, cuDNN and NCCL. Separate from check.hpp so
// that only the sources using a library include its header.
#pragma once

#include "errors/check.hpp"

namespace kiln::impl {
[[noreturn]] KILN_API void throw_library_error(Status status, const char* library, int code,
                                               const char* library_message, const char* expression,
                                               const char* file, int line);
}  // namespace kiln::impl

// cuBLASLt: include <cublasLt.h> before using it.
#define KILN_CUBLAS_CHECK(expr)                                               \
  do {                                                                        \
    const cublasStatus_t kiln_st_ = (expr);                                   \
    if (kiln_st_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                       \
      ::kiln::impl::throw_library_error(                                      \
          ::kiln::Status::cublas_error, "cuBLAS", static_cast<int>(kiln_st_), \
          cublasLtGetStatusString(kiln_st_), #expr, __FILE__, __LINE__);      \
  } while (0)

// cuDNN: include <cudnn.h> (or cudnn_graph.h) before using it.
#define KILN_CUDNN_CHECK(expr)                                                                     \
  do {                                                                                             \
    const cudnnStatus_t kiln_st_ = (expr);                                                         \
    if (kiln_st_ != CUDNN_STATUS_SUCCESS) [[unlikely]]                                             \
      ::kiln::impl::throw_library_error(::kiln::Status::cudnn_error, "cuDNN",                      \
                                        static_cast<int>(kiln_st_), cudnnGetErrorString(kiln_st_), \
                                        #expr, __FILE__, __LINE__);                                \
  } while (0)

// NCCL: include <nccl.h> before using it.
#define KILN_NCCL_CHECK(expr)                                                                     \
  do {                                                                                            \
    const ncclResult_t kiln_st_ = (expr);                                                         \
    if (kiln_st_ != ncclSuccess && kiln_st_ != ncclInProgress) [[unlikely]]                       \
      ::kiln::impl::throw_library_error(::kiln::Status::nccl_error, "NCCL",                       \
                                        static_cast<int>(kiln_st_), ncclGetErrorString(kiln_st_), \
                                        #expr, __FILE__, __LINE__);                               \
  } while (0)
