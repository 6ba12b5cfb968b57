// Rotary embedding forward and backward, bf16 and fp32, in place.
//
// A thread owns one (b, t) token, one run of kVec consecutive i in the first half of the head,
// and up to kHeads heads of that token: it computes the kVec angles p * inv_freq[i] and their
// sine and cosine once and applies them to every head it owns, so their cost is amortized over
// kHeads heads. Each head is two accesses of kVec elements, i and i + HD/2: 16-byte vectors on
// the fast path, scalars otherwise. Every element is read and
// written by one thread only, so in place needs no synchronization. inv_freq comes in the
// kernel's parameters (__grid_constant__: indexed in the constant bank, no local copy); nothing
// grows with T.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/common/check.hpp"
#include "kernels/common/rows.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/rope/rope.hpp"
#include "kernels/rope/rope_layout.hpp"
#include "kernels/rope/rope_math.hpp"

namespace kiln::dev::rope {

using rope_layout::kHeads;
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

// kVec elements of T in registers: a 16-byte vector (kept as 32-bit words, rows.cuh) or a scalar.
template <typename T, int kVec>
struct Run {
  static_assert(kVec == Vec16<T>::kSize, "a run is one 16-byte vector or one element");
  Vec16<T> v;
  __device__ __forceinline__ void load(const T* p) { v = load16(p); }
  __device__ __forceinline__ float at(int e) const { return get(v, e); }
  __device__ __forceinline__ void store(T* p, const float (&f)[kVec]) const {
    store16(p, make16<T>(f));
  }
};
template <typename T>
struct Run<T, 1> {
  T v;
  __device__ __forceinline__ void load(const T* p) { v = *p; }
  __device__ __forceinline__ float at(int) const { return to_float(v); }
  __device__ __forceinline__ void store(T* p, const float (&f)[1]) const {
    *p = from_float<T>(f[0]);
  }
};

template <typename T, int kVec, bool kTranspose, typename Index>
__device__ __forceinline__ void rope_item(const Params<T>& p, Index item) {
  const rope_layout::RopeItem it = rope_layout::locate(p.grid, item, kVec);
  const int hd = p.grid.head_dim, half = hd / 2, heads = it.heads;
  T* base = p.x + it.offset;
  // Loads first: the sines and cosines below are computed while they are in flight.
  Run<T, kVec> lo[kHeads], hi[kHeads];
#pragma unroll
  for (int u = 0; u < kHeads; ++u) {
    if (u < heads) {
      lo[u].load(base + u * hd);
      hi[u].load(base + u * hd + half);
    }
  }

  // fp32(p) * inv_freq in fp32, as Hugging Face computes the angle; its sine and cosine accurate
  // for every angle positions below 2^31 give (rope_math.hpp).
  const float pos = static_cast<float>(p.pos_offset + static_cast<int>(it.t));
  float c[kVec], s[kVec];
#pragma unroll
  for (int e = 0; e < kVec; ++e) {
    rope_math::sincos_angle(pos * p.inv_freq[it.run * kVec + e], &s[e], &c[e]);
    if constexpr (kTranspose) s[e] = -s[e];
  }
#pragma unroll
  for (int u = 0; u < kHeads; ++u) {
    if (u < heads) {
      float y1[kVec], y2[kVec];
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const float x1 = lo[u].at(e), x2 = hi[u].at(e);
        y1[e] = fmaf(x1, c[e], -x2 * s[e]);
        y2[e] = fmaf(x2, c[e], x1 * s[e]);
      }
      lo[u].store(base + u * hd, y1);
      hi[u].store(base + u * hd + half, y2);
    }
  }
}

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
      rope_item<T, kVec, kTranspose>(p, static_cast<std::uint32_t>(i));
  } else {
    for (std::int64_t i = first; i < total; i += stride)
      rope_item<T, kVec, kTranspose>(p, static_cast<std::uint64_t>(i));
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
