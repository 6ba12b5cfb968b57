// Internal checks used by every kiln source. Each throws kiln::Error naming the failed
// expression and its place; the C ABI guard (capi.hpp) turns that into a status and a message.
//
//   KILN_CHECK_ARG(C > 0, "layernorm_fwd: C must be > 0 (got ", C, ")");   // invalid_argument
//   KILN_CHECK(cond, Status::not_supported, "head dim ", hd, " is not served");
//   KILN_CUDA_CHECK(cudaMemsetAsync(p, 0, n, stream));
//   my_kernel<<<grid, block, smem, stream>>>(...);  KILN_LAUNCH_CHECK(stream);
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <sstream>
#include <string>

#include "kiln/error.hpp"
#include "kiln/export.h"

namespace kiln::impl {

// Concatenates its arguments with operator<< into one message.
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// Exported (though internal) so that kiln's benchmarks and tools, linked to the shared library, use
// the same checks.
[[noreturn]] KILN_API void throw_error(Status status, const std::string& message,
                                       const char* expression, const char* file, int line);
[[noreturn]] KILN_API void throw_cuda_error(cudaError_t error, const char* expression,
                                            const char* file, int line);

// Status for a CUDA runtime error: no_device, out_of_memory or cuda_error.
KILN_API Status status_of(cudaError_t error);

// After a launch: reports a launch error and, when kiln_sync_after_launch() is on and the stream is
// not capturing, synchronizes `stream` so an asynchronous fault is blamed on this launch.
KILN_API void check_launch(cudaStream_t stream, const char* file, int line);

inline bool is_aligned(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

}  // namespace kiln::impl

#define KILN_CHECK(cond, status, ...)                                                      \
  do {                                                                                     \
    if (!(cond)) [[unlikely]]                                                              \
      ::kiln::impl::throw_error((status), ::kiln::impl::cat(__VA_ARGS__), #cond, __FILE__, \
                                __LINE__);                                                 \
  } while (0)

#define KILN_CHECK_ARG(cond, ...) KILN_CHECK(cond, ::kiln::Status::invalid_argument, __VA_ARGS__)

// A non-null pointer aligned to `bytes` (16 for vectorized access).
#define KILN_CHECK_PTR(ptr, bytes, op)                                                    \
  do {                                                                                    \
    KILN_CHECK_ARG((ptr) != nullptr, op, ": ", #ptr, " is null");                         \
    KILN_CHECK_ARG(::kiln::impl::is_aligned((ptr), (bytes)), op, ": ", #ptr, " (",        \
                   static_cast<const void*>(ptr), ") is not ", (bytes), "-byte aligned"); \
  } while (0)

#define KILN_CUDA_CHECK(expr)                                               \
  do {                                                                      \
    const cudaError_t kiln_err_ = (expr);                                   \
    if (kiln_err_ != cudaSuccess) [[unlikely]]                              \
      ::kiln::impl::throw_cuda_error(kiln_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define KILN_LAUNCH_CHECK(stream) ::kiln::impl::check_launch((stream), __FILE__, __LINE__)
