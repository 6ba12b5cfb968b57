// Finding a chunk's tensor in a device table of a multi-tensor op (kiln/optimizer.h).
#pragma once

#include <cstdint>

namespace kiln::dev {

// The index of the last entry whose chunk_begin is <= chunk (entry 0 starts at chunk 0). Empty
// tensors share chunk_begin with the entry after them, so the last such entry is the one that
// holds the chunk. Every thread of a block searches the same entries: the loads are broadcasts
// that stay in L1 after the first chunk.
template <typename Entry>
__device__ __forceinline__ int find_chunk_tensor(const Entry* table, int count,
                                                 std::int64_t chunk) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table[mid].chunk_begin <= chunk)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

}  // namespace kiln::dev
