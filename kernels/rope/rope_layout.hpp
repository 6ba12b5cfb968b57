// Index math of the rotary and SwiGLU kernels, host and device. Plain C++ (no CUDA needed), so
// tests/cpu/rope_layout_test.cpp can check on the CPU that the work items cover every element
// the kernels must write exactly once, touch nothing else, and that the 16-byte path's accesses
// are 16-byte aligned.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KILN_LAYOUT_HD __host__ __device__ __forceinline__
#else
#define KILN_LAYOUT_HD inline
#endif

namespace kiln::rope_layout {

// Heads per rope work item: the sines and cosines are amortized over them, and each brings two
// loads in flight. 4 keeps the 16-byte kernels under 128 registers (two blocks per SM); 8 needed
// about 148.
constexpr int kHeads = 4;

// The rope work grid: items (b, t, chunk, run), run fastest. A run is kVec consecutive i in the
// first half of a head; a chunk is up to kHeads consecutive heads of one token.
struct RopeGrid {
  std::int64_t tokens;  // T
  std::int64_t stride_b, stride_t;
  std::int64_t total;  // B * T * chunks * runs
  int H, head_dim, runs, chunks;
};

inline RopeGrid make_rope_grid(std::int64_t B, std::int64_t T, std::int64_t H, int head_dim,
                               std::int64_t stride_b, std::int64_t stride_t, int vec) {
  RopeGrid g{};
  g.tokens = T;
  g.stride_b = stride_b;
  g.stride_t = stride_t;
  g.H = static_cast<int>(H);
  g.head_dim = head_dim;
  g.runs = head_dim / 2 / vec;
  g.chunks = static_cast<int>((H + kHeads - 1) / kHeads);
  g.total = B * T * g.chunks * g.runs;
  return g;
}

// Where item `item` works: the element offset of its first element (head h0, i = run * vec; the
// head u of the item is head_dim further per u, its second half head_dim / 2 further), the number
// of heads it owns, its token t (position pos_offset + t) and its run. Index: std::uint32_t when
// total fits (cheaper division), else std::uint64_t.
struct RopeItem {
  std::int64_t offset, t;
  int heads, run;
};
template <typename Index>
KILN_LAYOUT_HD RopeItem locate(const RopeGrid& g, Index item, int vec) {
  RopeItem r;
  r.run = static_cast<int>(item % static_cast<Index>(g.runs));
  item /= static_cast<Index>(g.runs);
  const int chunk = static_cast<int>(item % static_cast<Index>(g.chunks));
  item /= static_cast<Index>(g.chunks);
  r.t = static_cast<std::int64_t>(item % static_cast<Index>(g.tokens));
  const auto b = static_cast<std::int64_t>(item / static_cast<Index>(g.tokens));
  const int h0 = chunk * kHeads;
  r.heads = g.H - h0 < kHeads ? g.H - h0 : kHeads;
  r.offset =
      b * g.stride_b + r.t * g.stride_t + static_cast<std::int64_t>(h0) * g.head_dim + r.run * vec;
  return r;
}

// The 16-byte rope path: every run's start 16-byte aligned, i.e. x 16-byte aligned and the half
// head and every stride in use a multiple of the vector (`vec` elements of 16 bytes).
inline bool rope_vector_path(std::uintptr_t x, std::int64_t B, std::int64_t T, int head_dim,
                             std::int64_t stride_b, std::int64_t stride_t, int vec) {
  return x % 16 == 0 && (head_dim / 2) % vec == 0 && (B <= 1 || stride_b % vec == 0) &&
         (T <= 1 || stride_t % vec == 0);
}

// SwiGLU item (n, run) of the (N, runs) grid, runs = I / vec: columns [run * vec, + vec) of row
// n. gate: gu's gate element (up is I further); col: the out / dout element.
template <typename Index>
KILN_LAYOUT_HD void swiglu_locate(Index item, std::int64_t runs, std::int64_t I, int vec,
                                  std::int64_t* gate, std::int64_t* col) {
  const auto n = static_cast<std::int64_t>(item / static_cast<Index>(runs));
  const auto run = static_cast<std::int64_t>(item % static_cast<Index>(runs));
  *gate = n * 2 * I + run * vec;
  *col = n * I + run * vec;
}

}  // namespace kiln::rope_layout
