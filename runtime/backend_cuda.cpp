// The cuda backend: kiln's kernels through their C++ APIs, bf16 compute with fp32 master weights,
// gradients, optimizer state and statistics, everything ordered on the device's compute stream.
//
// Host synchronization: download() and synchronize() only. Whether a step is skipped (non-finite
// loss or gradient norm) is decided on the device by the stats kernel and read there by AdamW, so
// the host queues a whole step, optimizer included, without waiting for the GPU.
#include <cuda_runtime_api.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "errors/check.hpp"
#include "runtime/backend_cuda.hpp"
#include "runtime/cuda/runtime_kernels.hpp"

namespace kiln::impl {
namespace {

uint16_t to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
    return static_cast<uint16_t>((u >> 16) | 0x40);
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

float from_bf16_bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

std::string CudaBackend::description() const {
  return std::string("cuda (") + device_.info().name + ", bf16)";
}

// ---- memory -----------------------------------------------------------------------------------
void* CudaBackend::allocate(std::size_t bytes) {
  device_.make_current();
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<std::size_t>(bytes, 1));
  if (e != cudaSuccess) {
    cudaGetLastError();
    KILN_CHECK(false, Status::out_of_memory, "cuda backend: cannot allocate ", bytes, " bytes on ",
               device_.info().name, " (", cudaGetErrorString(e), ")");
  }
  return p;
}

void CudaBackend::deallocate(void* p) noexcept {
  if (p) cudaFree(p);
}

void CudaBackend::upload(void* dst, const void* src, std::size_t bytes) {
  if (bytes) KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s()));
}

void CudaBackend::download(void* dst, const void* src, std::size_t bytes) {
  if (bytes) KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s()));
  device_.synchronize();
}

void CudaBackend::fill_zero(void* p, std::size_t bytes) {
  if (bytes) KILN_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, s()));
}

void CudaBackend::upload_f32(void* dst, DType dtype, const float* src, int64_t n) {
  if (dtype == DType::f32) return upload(dst, src, static_cast<std::size_t>(n) * 4);
  KILN_CHECK_ARG(dtype == DType::bf16, "cuda backend: no ", dtype_name(dtype), " buffers");
  std::vector<uint16_t> staged(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    staged[static_cast<std::size_t>(i)] = to_bf16_bits(src[i]);
  upload(dst, staged.data(), staged.size() * 2);
  device_.synchronize();  // `staged` dies here
}

void CudaBackend::download_f32(float* dst, const void* src, DType dtype, int64_t n) {
  if (dtype == DType::f32) return download(dst, src, static_cast<std::size_t>(n) * 4);
  KILN_CHECK_ARG(dtype == DType::bf16, "cuda backend: no ", dtype_name(dtype), " buffers");
  std::vector<uint16_t> staged(static_cast<std::size_t>(n));
  download(staged.data(), src, staged.size() * 2);
  for (int64_t i = 0; i < n; ++i)
    dst[i] = from_bf16_bits(staged[static_cast<std::size_t>(i)]);
}

void CudaBackend::upload_f64(void* dst, DType dtype, const double* src, int64_t n) {
  std::vector<float> f(src, src + n);
  upload_f32(dst, dtype, f.data(), n);
}

void CudaBackend::download_f64(double* dst, const void* src, DType dtype, int64_t n) {
  std::vector<float> f(static_cast<std::size_t>(n));
  download_f32(f.data(), src, dtype, n);
  std::copy(f.begin(), f.end(), dst);
}

void CudaBackend::convert(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  if (dst_dtype == src_dtype) {
    if (dst != src) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * dtype_size(dst_dtype),
                                      cudaMemcpyDeviceToDevice, s()));
    }
    return;
  }
  KILN_CHECK_ARG(dst_dtype == DType::bf16 && src_dtype == DType::f32,
                 "cuda backend: converts f32 to bf16 only (got ", dtype_name(src_dtype), " to ",
                 dtype_name(dst_dtype), ")");
  launch_f32_to_bf16(dst, static_cast<const float*>(src), n, s());
}

void CudaBackend::set_workspace(void* workspace, std::size_t bytes) {
  workspace_ = workspace;
  workspace_bytes_ = bytes;
}

void CudaBackend::begin_capture() {
  KILN_CUDA_CHECK(cudaStreamBeginCapture(s(), cudaStreamCaptureModeThreadLocal));
}

int CudaBackend::end_capture() {
  cudaGraph_t graph = nullptr;
  KILN_CUDA_CHECK(cudaStreamEndCapture(s(), &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  KILN_CUDA_CHECK(e);
  graphs_.push_back(exec);
  return static_cast<int>(graphs_.size() - 1);
}

void CudaBackend::replay(int graph) {
  KILN_CHECK_ARG(graph >= 0 && graph < static_cast<int>(graphs_.size()) &&
                     graphs_[static_cast<std::size_t>(graph)],
                 "cuda backend: no graph ", graph);
  KILN_CUDA_CHECK(cudaGraphLaunch(graphs_[static_cast<std::size_t>(graph)], s()));
}

void CudaBackend::release_graph(int graph) noexcept {
  if (graph >= 0 && graph < static_cast<int>(graphs_.size()) &&
      graphs_[static_cast<std::size_t>(graph)]) {
    cudaGraphExecDestroy(graphs_[static_cast<std::size_t>(graph)]);
    graphs_[static_cast<std::size_t>(graph)] = nullptr;
  }
}

std::shared_ptr<Backend> make_cuda_backend_impl(int ordinal) {
  return std::make_shared<CudaBackend>(ordinal);
}

}  // namespace kiln::impl
