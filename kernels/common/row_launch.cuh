// How a row kernel (kernels/common/rows.cuh) is placed and launched, shared by the norm and
// softmax kernels: RowPlace says where a thread's row lies; launch_rows picks the row-to-thread
// mapping by row width (dev::with_row_mapping) or falls back to the op's generic kernel.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "errors/check.hpp"
#include "kernels/common/rows.cuh"

namespace kiln::dev {

// The row of this thread's group, for a grid launched by launch_rows: blocks of kRowWarpThreads
// threads holding kRowWarpThreads / kLanes rows each, or (kLanes == 0) one row per block.
template <int kLanes>
struct RowPlace {
  std::int64_t row;     // this group's row
  std::int64_t offset;  // its first element: row * C
  bool active;          // row < N; inactive lanes still join their group's shuffles
  int rank;             // this thread's rank in the group: it holds packs rank, rank + stride, ...
  int stride;           // the group's size

  __device__ __forceinline__ static RowPlace here(std::int64_t N, int C) {
    using G = RowGroup<kLanes>;
    RowPlace r;
    r.row = static_cast<std::int64_t>(blockIdx.x) * G::rows_per_block(blockDim.x) + G::slot();
    r.active = r.row < N;
    r.rank = G::rank();
    r.stride = G::size();
    r.offset = r.row * C;
    return r;
  }
};

}  // namespace kiln::dev

namespace kiln::impl {

// Grid of a generic (block-per-row, grid-stride) row kernel.
inline unsigned generic_row_grid(std::int64_t N) {
  return static_cast<unsigned>(std::min<std::int64_t>(N, 1 << 20));
}

// Launches pick(lanes, packs) -- a kernel over rows of p.C elements of T, held in registers with
// the mapping dev::with_row_mapping gives -- or, for a row width no mapping holds (C not a whole
// number of 16-byte packs, or too long), `generic` with `generic_threads` threads a block.
template <typename T, typename Params, typename Pick, typename Generic>
void launch_rows(const Params& p, Pick pick, Generic generic, int generic_threads,
                 cudaStream_t stream) {
  if (p.N == 0) return;
  constexpr int kPack = dev::Vec16<T>::kSize;
  const int vec = p.C / kPack;
  if (p.C % kPack == 0 && vec <= dev::kRowMaxPacks) {
    dev::with_row_mapping(vec, [&](auto lanes, auto packs) {
      constexpr int kLanes = decltype(lanes)::value, kPacks = decltype(packs)::value;
      auto kernel = pick(lanes, packs);
      if constexpr (kLanes > 0) {
        const std::int64_t rows = dev::kRowWarpThreads / kLanes;
        const auto blocks = static_cast<unsigned>((p.N + rows - 1) / rows);
        kernel<<<blocks, dev::kRowWarpThreads, 0, stream>>>(p);
      } else {
        kernel<<<static_cast<unsigned>(p.N), dev::row_block_threads(vec, kPacks), 0, stream>>>(p);
      }
    });
  } else {
    generic<<<generic_row_grid(p.N), generic_threads, 0, stream>>>(p);
  }
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
