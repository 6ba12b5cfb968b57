// Symbols the instrumented reader sources reference but no fuzz target reaches: the trainer's
// checkpoint methods (runtime/checkpoint.cpp) use the trainer's state and backend (backend.cpp
// makes backends), and the error module names CUDA errors. Each aborts if it is ever called.
#include <cstdlib>

#include "errors/check.hpp"
#include "kiln/backend.hpp"
#include "runtime/trainer_state.hpp"

namespace kiln {
std::shared_ptr<Backend> make_cpu_backend(DType, int) {
  std::abort();
}
namespace impl {
std::shared_ptr<Backend> make_cuda_backend_impl(int) {
  std::abort();
}
void* TrainerState::at(std::size_t) const {
  std::abort();
}
template <>
void TrainerState::set_master<float>(const float*) {
  std::abort();
}
}  // namespace impl
}  // namespace kiln

extern "C" {
// backend.cpp's resolve_backend_kind asks for the device count.
kiln_status_t kiln_device_count(int*) {
  std::abort();
}
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
