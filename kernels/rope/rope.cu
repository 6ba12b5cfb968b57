// Rotary embedding forward and backward, bf16 and fp32, in place.
//
// A thread owns one (b, t) token, one run of kVec consecutive i in the first half of the head,
// and up to kHeads (rope_layout.hpp) heads of that token: it computes the kVec angles p *
// inv_freq[i] and their sine and cosine once and applies them to every head it owns, so their cost
// is amortized over kHeads heads. Each head is two accesses of kVec elements, i and i + HD/2:
// 16-byte vectors on the fast path, scalars otherwise. Every element is read and written by one
// thread only, so in place needs no synchronization. The item's work is rope_item.hpp (shared with
// a CPU test), its index math rope_layout.hpp. inv_freq comes in the kernel's parameters
// (__grid_constant__: read from the constant bank, no local copy); nothing grows with T.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "errors/check.hpp"
#include "kernels/rope/rope.hpp"
#include "kernels/rope/rope_item.hpp"
#include "kernels/rope/rope_layout.hpp"
#include "kernels/rope/run.cuh"

namespace kiln::dev::rope {

constexpr int kThreads = 256;
constexpr int kMinBlocks = 2;  // at most 128 registers (rope_layout.hpp: kHeads)
constexpr int kMaxHalf = static_cast<int>(impl::kRopeMaxHeadDim / 2);

template <typename T>
struct Params {
  T* x;  // (B, T, H, HD), strided
  rope_layout::RopeGrid grid;
  int pos_offset;
  float inv_freq[kMaxHalf];
};

// Grid-stride over the work items (run fastest, then head chunk, token, batch), with 32-bit
// index arithmetic whenever the item count allows it (a uniform branch).
template <typename T, int kVec, bool kTranspose>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    rope_kernel(const __grid_constant__ Params<T> p) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t total = p.grid.total;
  if (total <= std::numeric_limits<std::uint32_t>::max()) {
    for (std::int64_t i = first; i < total; i += stride)
      rope_layout::rope_item<Run<T, kVec>, kVec, kTranspose>(p.x, p.grid, p.inv_freq, p.pos_offset,
                                                             static_cast<std::uint32_t>(i));
  } else {
    for (std::int64_t i = first; i < total; i += stride)
      rope_layout::rope_item<Run<T, kVec>, kVec, kTranspose>(p.x, p.grid, p.inv_freq, p.pos_offset,
                                                             static_cast<std::uint64_t>(i));
  }
}

template <typename T, int kVec, bool kTranspose>
void launch(const impl::RopeArgs& a, cudaStream_t stream) {
  Params<T> p{};
  p.x = static_cast<T*>(a.x);
  p.grid = rope_layout::make_rope_grid(a.B, a.T, a.H, a.head_dim, a.stride_b, a.stride_t, kVec);
  p.pos_offset = static_cast<int>(a.pos_offset);
  std::copy(a.inv_freq, a.inv_freq + a.head_dim / 2, p.inv_freq);
  // Enough blocks to fill any current GPU several times; the grid-stride loop covers the rest.
  constexpr std::int64_t kMaxBlocks = std::int64_t{1} << 16;
  const auto blocks = static_cast<unsigned>(
      std::min<std::int64_t>((p.grid.total + kThreads - 1) / kThreads, kMaxBlocks));
  rope_kernel<T, kVec, kTranspose><<<blocks, kThreads, 0, stream>>>(p);
  KILN_LAUNCH_CHECK(stream);
}

template <typename T>
void dispatch(const impl::RopeArgs& a, bool transpose, cudaStream_t stream) {
  constexpr int kVec = Vec16<T>::kSize;
  const bool vec = rope_layout::rope_vector_path(reinterpret_cast<std::uintptr_t>(a.x), a.B, a.T,
                                                 a.head_dim, a.stride_b, a.stride_t, kVec);
  if (vec && transpose) {
    launch<T, kVec, true>(a, stream);
  } else if (vec) {
    launch<T, kVec, false>(a, stream);
  } else if (transpose) {
    launch<T, 1, true>(a, stream);
  } else {
    launch<T, 1, false>(a, stream);
  }
}

}  // namespace kiln::dev::rope

namespace kiln::impl {

void rope(kiln_dtype_t dtype, const RopeArgs& args, bool transpose, cudaStream_t stream) {
  if (args.B == 0 || args.T == 0 || args.H == 0) return;
  if (dtype == KILN_DTYPE_BF16) {
    dev::rope::dispatch<dev::bf16>(args, transpose, stream);
  } else {
    dev::rope::dispatch<float>(args, transpose, stream);
  }
}

}  // namespace kiln::impl
