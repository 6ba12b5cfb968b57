// Symbols the instrumented reader sources reference but no fuzz target reaches: the trainer's
// checkpoint methods (runtime/checkpoint.cpp) use the trainer's state and backend, and the error
// module names CUDA errors. Each aborts if it is ever called.
#include <cstdlib>

#include "kernels/common/check.hpp"

extern "C" {
const char* cudaGetErrorString(cudaError_t) {
  std::abort();
}
const char* cudaGetErrorName(cudaError_t) {
  std::abort();
}
cudaError_t cudaGetLastError() {
  std::abort();
}
cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus*) {
  std::abort();
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  std::abort();
}
}
