// SwiGLU forward and backward, bf16 and fp32: elementwise over the (N, I) pairs (gate, up) of
// gu = [gate | up], one run of kVec consecutive columns per work item (a 16-byte vector when I is
// a multiple of it, else one element), grid-stride; the item code is swiglu_item.hpp (shared with a
// CPU test). The backward writes both gradients from one read of gate, up and dout; the item reads
// all three before writing, and no other item touches its elements, so dgu may be gu.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <utility>

#include "errors/check.hpp"
#include "kernels/common/device.hpp"
#include "kernels/rope/run.cuh"
#include "kernels/swiglu/swiglu.hpp"
#include "kernels/swiglu/swiglu_item.hpp"

namespace kiln::dev::swiglu {

constexpr int kThreads = 256;

// Grid-stride over the N * runs items; 32-bit index arithmetic when the count allows (uniform).
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    swiglu_fwd_kernel(T* out, const T* gu, std::int64_t total, std::int64_t runs, std::int64_t I) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (total <= std::numeric_limits<std::uint32_t>::max()) {
    for (std::int64_t i = first; i < total; i += stride)
      swiglu_math::fwd_item<Run<T, kVec>, kVec>(out, gu, runs, I, static_cast<std::uint32_t>(i));
  } else {
    for (std::int64_t i = first; i < total; i += stride)
      swiglu_math::fwd_item<Run<T, kVec>, kVec>(out, gu, runs, I, static_cast<std::uint64_t>(i));
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    swiglu_bwd_kernel(T* dgu, const T* dout, const T* gu, std::int64_t total, std::int64_t runs,
                      std::int64_t I) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (total <= std::numeric_limits<std::uint32_t>::max()) {
    for (std::int64_t i = first; i < total; i += stride)
      swiglu_math::bwd_item<Run<T, kVec>, kVec>(dgu, dout, gu, runs, I,
                                                static_cast<std::uint32_t>(i));
  } else {
    for (std::int64_t i = first; i < total; i += stride)
      swiglu_math::bwd_item<Run<T, kVec>, kVec>(dgu, dout, gu, runs, I,
                                                static_cast<std::uint64_t>(i));
  }
}

// Blocks of `kernel` resident on one SM of the current device, cached per (kernel, device): the
// occupancy query costs host microseconds that every call would pay again.
inline int resident_blocks(const void* kernel) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, int> cache;
  const int device = impl::current_device_facts().ordinal;
  const std::lock_guard<std::mutex> lock(mutex);
  int& per_sm = cache[std::make_pair(kernel, device)];
  if (per_sm == 0) {
    KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
    per_sm = std::max(per_sm, 1);
  }
  return per_sm;
}

// One resident wave at most: every block runs from the start and loops over an equal share, with
// its loads in flight. (A fixed 2048 threads per SM would leave blocks for a second wave where
// registers allow fewer, and those would run a whole share late.)
inline unsigned grid(const void* kernel, std::int64_t total) {
  const std::int64_t wave =
      static_cast<std::int64_t>(impl::current_device_facts().multiprocessors) *
      resident_blocks(kernel);
  return static_cast<unsigned>(
      std::max<std::int64_t>(1, std::min((total + kThreads - 1) / kThreads, wave)));
}

// Launches kernel<<<grid, kThreads>>> over `total` items.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, std::int64_t total, cudaStream_t stream, Args... args) {
  kernel<<<grid(reinterpret_cast<const void*>(kernel), total), kThreads, 0, stream>>>(args...);
  KILN_LAUNCH_CHECK(stream);
}

template <typename T>
void fwd(void* out, const void* gu, std::int64_t N, std::int64_t I, cudaStream_t stream) {
  constexpr int kVec = Vec16<T>::kSize;
  auto* o = static_cast<T*>(out);
  const auto* g = static_cast<const T*>(gu);
  if (I % kVec == 0) {
    const std::int64_t runs = I / kVec, total = N * runs;
    launch(swiglu_fwd_kernel<T, kVec>, total, stream, o, g, total, runs, I);
  } else {
    launch(swiglu_fwd_kernel<T, 1>, N * I, stream, o, g, N * I, I, I);
  }
}

template <typename T>
void bwd(void* dgu, const void* dout, const void* gu, std::int64_t N, std::int64_t I,
         cudaStream_t stream) {
  constexpr int kVec = Vec16<T>::kSize;
  auto* dg = static_cast<T*>(dgu);
  const auto* d = static_cast<const T*>(dout);
  const auto* g = static_cast<const T*>(gu);
  if (I % kVec == 0) {
    const std::int64_t runs = I / kVec, total = N * runs;
    launch(swiglu_bwd_kernel<T, kVec>, total, stream, dg, d, g, total, runs, I);
  } else {
    launch(swiglu_bwd_kernel<T, 1>, N * I, stream, dg, d, g, N * I, I, I);
  }
}

}  // namespace kiln::dev::swiglu

namespace kiln::impl {

void swiglu_fwd(kiln_dtype_t dtype, void* out, const void* gu, std::int64_t N, std::int64_t I,
                cudaStream_t stream) {
  if (N == 0) return;
  if (dtype == KILN_DTYPE_BF16) {
    dev::swiglu::fwd<dev::bf16>(out, gu, N, I, stream);
  } else {
    dev::swiglu::fwd<float>(out, gu, N, I, stream);
  }
}

void swiglu_bwd(kiln_dtype_t dtype, void* dgu, const void* dout, const void* gu, std::int64_t N,
                std::int64_t I, cudaStream_t stream) {
  if (N == 0) return;
  if (dtype == KILN_DTYPE_BF16) {
    dev::swiglu::bwd<dev::bf16>(dgu, dout, gu, N, I, stream);
  } else {
    dev::swiglu::bwd<float>(dgu, dout, gu, N, I, stream);
  }
}

}  // namespace kiln::impl
