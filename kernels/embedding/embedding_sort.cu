// The embedding backward's grouping of token occurrences: a stable radix sort (CUB's) of the
// token ids, carrying each occurrence's position. Stable means each id's positions come out in
// increasing order, so the summation order in embedding_bwd.cu depends only on the tokens: the
// result is deterministic without atomics. In its own translation unit: CUB is slow to compile.
#define CCCL_DISABLE_NVTX  // no profiler ranges inside a library call
#include <cub/device/device_radix_sort.cuh>

#include <bit>
#include <cstdint>

#include "errors/check.hpp"
#include "kernels/embedding/embedding.hpp"

namespace kiln::impl {
namespace {

constexpr std::size_t kAlign = 256;

std::size_t align_up(std::size_t x) {
  return (x + kAlign - 1) / kAlign * kAlign;
}

// Bits of the keys: ids in [0, V) and the sentinel V.
int key_bits(std::int64_t V) {
  return std::bit_width(static_cast<std::uint32_t>(V));
}

// keys[i] = tokens[i] if in [0, V) else V (sorted after every valid id, skipped by the backward);
// values[i] = i.
__global__ void embedding_sort_keys_kernel(std::uint32_t* keys, std::int32_t* values,
                                           const std::int32_t* tokens, std::int64_t M,
                                           std::int32_t V) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < M;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int32_t t = tokens[i];
    keys[i] = static_cast<std::uint32_t>(t >= 0 && t < V ? t : V);
    values[i] = static_cast<std::int32_t>(i);
  }
}

}  // namespace

EmbeddingBwdWorkspace embedding_bwd_workspace(std::int64_t M, std::int64_t V) {
  EmbeddingBwdWorkspace w;
  const std::size_t array = align_up(static_cast<std::size_t>(M) * sizeof(std::int32_t));
  w.keys_in = 0;
  w.values_in = w.keys_in + array;
  w.keys_out = w.values_in + array;
  w.values_out = w.keys_out + array;
  w.sort_temp = w.values_out + array;
  // A size query only (null storage): no launch, but CUB reads the current device's properties.
  std::size_t temp = 0;
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, temp, static_cast<const std::uint32_t*>(nullptr),
      static_cast<std::uint32_t*>(nullptr), static_cast<const std::int32_t*>(nullptr),
      static_cast<std::int32_t*>(nullptr), static_cast<int>(M), 0, key_bits(V), cudaStream_t{}));
  w.sort_temp_bytes = temp;
  w.total = w.sort_temp + align_up(temp);
  return w;
}

void embedding_sort_tokens(void* workspace, const EmbeddingBwdWorkspace& layout,
                           const std::int32_t* tokens, std::int64_t M, std::int64_t V,
                           cudaStream_t stream) {
  auto* base = static_cast<unsigned char*>(workspace);
  auto* keys_in = reinterpret_cast<std::uint32_t*>(base + layout.keys_in);
  auto* values_in = reinterpret_cast<std::int32_t*>(base + layout.values_in);
  auto* keys_out = reinterpret_cast<std::uint32_t*>(base + layout.keys_out);
  auto* values_out = reinterpret_cast<std::int32_t*>(base + layout.values_out);
  const int threads = 256;
  const std::int64_t blocks = (M + threads - 1) / threads;
  embedding_sort_keys_kernel<<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), threads, 0,
                               stream>>>(keys_in, values_in, tokens, M,
                                         static_cast<std::int32_t>(V));
  KILN_LAUNCH_CHECK(stream);
  std::size_t temp = layout.sort_temp_bytes;
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + layout.sort_temp, temp, keys_in, keys_out,
                                                  values_in, values_out, static_cast<int>(M), 0,
                                                  key_bits(V), stream));
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
