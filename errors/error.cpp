// kiln::Error, the per-thread last-error message, and the C ABI's status functions.
#include <atomic>
#include <cstdlib>
#include <string>
#include <string_view>

#include "errors/capi.hpp"
#include "errors/check.hpp"
#include "errors/check_libs.hpp"

namespace kiln {
namespace {

// Sources are named from the project root: the build maps the root away with
// -fmacro-prefix-map, and a compiler cache that rewrites paths relative to the build folder
// leaves leading "../" (or "./"), stripped here.
std::string project_relative(const char* file) {
  if (!file) return {};
  std::string_view f(file);
  while (f.starts_with("../") || f.starts_with("./"))
    f.remove_prefix(f.starts_with("./") ? 2 : 3);
  return std::string(f);
}

std::string describe(const std::string& message, const char* expression, const std::string& file,
                     int line) {
  if (file.empty()) return message;
  std::string s = message + " [";
  if (expression && *expression) s += std::string(expression) + " at ";
  return s + file + ":" + std::to_string(line) + "]";
}

}  // namespace

Error::Error(Status status, const std::string& message, const char* expression, const char* file,
             int line)
    : std::runtime_error(describe(message, expression, project_relative(file), line)),
      status_(status),
      message_(message),
      expression_(expression ? expression : ""),
      file_(project_relative(file)),
      line_(line) {}

namespace impl {
namespace {

thread_local std::string t_last_error;

int sync_from_environment() {
  const char* v = std::getenv("KILN_SYNC_AFTER_LAUNCH");
  return v && *v && std::string(v) != "0";
}
std::atomic<int> g_sync_after_launch{sync_from_environment()};

}  // namespace

void set_last_error(const std::string& message) {
  t_last_error = message;
}

void throw_error(Status status, const std::string& message, const char* expression,
                 const char* file, int line) {
  throw Error(status, message, expression, file, line);
}

Status status_of(cudaError_t error) {
  switch (error) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorCompatNotSupportedOnDevice:
      return Status::no_device;
    case cudaErrorMemoryAllocation:
      return Status::out_of_memory;
    default:
      return Status::cuda_error;
  }
}

void throw_cuda_error(cudaError_t error, const char* expression, const char* file, int line) {
  std::string text = cat(cudaGetErrorName(error), ": ", cudaGetErrorString(error));
  const Status status = status_of(error);
  if (status == Status::no_device) text = "no CUDA device: " + text;
  throw Error(status, text, expression, file, line);
}

void throw_library_error(Status status, const char* library, int code, const char* library_message,
                         const char* expression, const char* file, int line) {
  throw Error(status, cat(library, " error ", code, ": ", library_message), expression, file, line);
}

void check_launch(cudaStream_t stream, const char* file, int line) {
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw Error(
        status_of(error),
        cat("kernel launch failed: ", cudaGetErrorName(error), ": ", cudaGetErrorString(error)),
        "launch", file, line);
  }
  if (!g_sync_after_launch.load(std::memory_order_relaxed)) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  KILN_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  error = cudaStreamSynchronize(stream);
  if (error != cudaSuccess) {
    throw Error(status_of(error),
                cat("kernel failed (seen by the synchronization after its launch): ",
                    cudaGetErrorName(error), ": ", cudaGetErrorString(error)),
                "launch", file, line);
  }
}

}  // namespace impl
}  // namespace kiln

extern "C" {

const char* kiln_status_name(kiln_status_t status) {
  switch (status) {
    case KILN_STATUS_OK:
      return "KILN_STATUS_OK";
    case KILN_STATUS_INVALID_ARGUMENT:
      return "KILN_STATUS_INVALID_ARGUMENT";
    case KILN_STATUS_NOT_SUPPORTED:
      return "KILN_STATUS_NOT_SUPPORTED";
    case KILN_STATUS_NO_DEVICE:
      return "KILN_STATUS_NO_DEVICE";
    case KILN_STATUS_CUDA_ERROR:
      return "KILN_STATUS_CUDA_ERROR";
    case KILN_STATUS_CUBLAS_ERROR:
      return "KILN_STATUS_CUBLAS_ERROR";
    case KILN_STATUS_CUDNN_ERROR:
      return "KILN_STATUS_CUDNN_ERROR";
    case KILN_STATUS_NCCL_ERROR:
      return "KILN_STATUS_NCCL_ERROR";
    case KILN_STATUS_OUT_OF_MEMORY:
      return "KILN_STATUS_OUT_OF_MEMORY";
    case KILN_STATUS_IO_ERROR:
      return "KILN_STATUS_IO_ERROR";
    case KILN_STATUS_DATA_ERROR:
      return "KILN_STATUS_DATA_ERROR";
    case KILN_STATUS_TIMEOUT:
      return "KILN_STATUS_TIMEOUT";
    case KILN_STATUS_INTERNAL_ERROR:
      return "KILN_STATUS_INTERNAL_ERROR";
  }
  return "KILN_STATUS_UNKNOWN";
}

const char* kiln_last_error(void) {
  return kiln::impl::t_last_error.c_str();
}

void kiln_clear_last_error(void) {
  kiln::impl::t_last_error.clear();
}

void kiln_set_sync_after_launch(int enabled) {
  kiln::impl::g_sync_after_launch.store(enabled != 0, std::memory_order_relaxed);
}

int kiln_sync_after_launch(void) {
  return kiln::impl::g_sync_after_launch.load(std::memory_order_relaxed);
}

const char* kiln_version_string(void) {
  return KILN_VERSION_STRING;
}

}  // extern "C"
