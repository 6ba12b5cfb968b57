// Index math of the sm_80 attention kernels' shared-memory tiles, host and device: the swizzled
// tile layout and the per-lane ldmatrix addresses of each operand shape. Plain C++ (no CUDA
// needed), so tests/cpu/attention_layout_test.cpp can check on the CPU, with an ldmatrix emulator,
// that every lane receives exactly the mma.m16n8k16 fragment elements the kernels assume.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KILN_ATTN_HD __host__ __device__ __forceinline__
#else
#define KILN_ATTN_HD inline
#endif

namespace kiln::attn {

// Element offset of (row, col) in a row-major tile of kCols bf16 whose 16-byte chunks are
// XOR-swizzled by row % 8. ldmatrix reads eight rows at one chunk column; with rows of 128 or 256
// bytes those would all fall in the same four banks; the swizzle spreads them over all 32. Row-wise
// 16-byte stores (cp.async) stay conflict-free. col % 8 is kept, so 4-byte writes of bf16 pairs
// land where ldmatrix expects them.
template <int kCols>
KILN_ATTN_HD int swz(int row, int col) {
  static_assert(kCols % 64 == 0, "rows of at least eight 16-byte chunks");
  return row * kCols + ((((col >> 3) ^ (row & 7)) << 3) | (col & 7));
}

// ldmatrix on a swizzled tile without per-call address arithmetic. For a read of an 8x8-matrix
// quad, lane l points at row R0 + lane_row(l), chunk C0 + lane_chunk(l) (lane_chunk in {0, 1}),
// where R0 (a multiple of 8) and C0 (even) are compile-time in the unrolled loops. Then the
// swizzled chunk is (C0 & ~7) + (((C0 & 7) | lane_chunk) ^ (lane_row & 7)): four per-lane values,
// one for each C0 % 8, plus a constant. The four byte offsets are computed once; every access is
// then a register plus an immediate.
template <int kCols>
struct LaneOffsets {
  std::uint32_t off[4];
  KILN_ATTN_HD LaneOffsets(int lane_row, int lane_chunk) {
    for (int j = 0; j < 4; ++j)
      off[j] = static_cast<std::uint32_t>(
          (lane_row * kCols + ((((2 * j) | lane_chunk) ^ (lane_row & 7)) << 3)) * 2);
  }
  // Byte offset of this lane's row pointer for the quad at row r0, chunk c0.
  KILN_ATTN_HD std::uint32_t at(int r0, int c0) const {
    return off[(c0 & 7) >> 1] + static_cast<std::uint32_t>((r0 * kCols + (c0 & ~7) * 8) * 2);
  }
};

// Lane patterns of the operand shapes (see the PTX fragment layouts); row_base is a multiple of
// 8 added to every row (e.g. the warp's first row).
//  A, 16 m x 16 k from a row-major tile: matrices (m 0-7 | 8-15) x (k 0-7 | 8-15).
template <int kCols>
KILN_ATTN_HD LaneOffsets<kCols> lanes_a(int lane, int row_base = 0) {
  return LaneOffsets<kCols>(row_base + (lane & 15), lane >> 4);
}
//  B for two n8 tiles x 16 k from an n-major tile (rows = n, k contiguous; K in Q K^T):
//  regs {0, 1} are n-tile 0, {2, 3} n-tile 1.
template <int kCols>
KILN_ATTN_HD LaneOffsets<kCols> lanes_bn(int lane, int row_base = 0) {
  return LaneOffsets<kCols>(row_base + (lane >> 4) * 8 + (lane & 7), (lane >> 3) & 1);
}
//  B for two n8 tiles x 16 k from a k-major tile (rows = k, n contiguous; V in P V), read with
//  .trans: regs {0, 1} are n-tile 0, {2, 3} n-tile 1.
template <int kCols>
KILN_ATTN_HD LaneOffsets<kCols> lanes_bk(int lane, int row_base = 0) {
  return LaneOffsets<kCols>(row_base + (lane & 15), lane >> 4);
}
//  A, 16 m x 16 k from a k-major tile (rows = k, m contiguous; dS stored transposed), .trans.
template <int kCols>
KILN_ATTN_HD LaneOffsets<kCols> lanes_at(int lane, int row_base = 0) {
  return LaneOffsets<kCols>(row_base + (lane >> 4) * 8 + (lane & 7), (lane >> 3) & 1);
}

// The transposed-A read of the dK/dV pass's dQ product at a fixed, runtime m chunk: byte offset
// of this lane's row pointer for keys 0-15 and m columns 16 * m16 .. 16 * m16 + 15 (add
// 16 * kCols * 2 bytes per further 16 keys, a whole swizzle period).
template <int kCols>
KILN_ATTN_HD std::uint32_t lane_at_fixed_m(int lane, int m16) {
  const int row = (lane >> 4) * 8 + (lane & 7);
  return static_cast<std::uint32_t>(swz<kCols>(row, (m16 * 2 + ((lane >> 3) & 1)) * 8) * 2);
}

// load_tile's mapping: thread `tid` of kThreads copies, in pass i, the 16-byte chunk at
// (row0 + i * kRowsPerPass, col) where row0 = tid / (kCols / 8); its shared offset is its first
// pass's plus i whole rows-per-pass (kRowsPerPass a multiple of 8 keeps the swizzle).
template <int kCols, int kThreads>
struct TileLoadMap {
  static constexpr int kChunksPerRow = kCols / 8;
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  static_assert(kThreads % kChunksPerRow == 0 && kRowsPerPass % 8 == 0,
                "whole passes of whole swizzle periods");
  KILN_ATTN_HD static int row(int tid) { return tid / kChunksPerRow; }
  KILN_ATTN_HD static int col(int tid) { return (tid % kChunksPerRow) * 8; }
  // Byte offset of pass i's chunk.
  KILN_ATTN_HD static std::uint32_t offset(int tid, int i) {
    return static_cast<std::uint32_t>(swz<kCols>(row(tid), col(tid)) * 2 +
                                      i * kRowsPerPass * kCols * 2);
  }
};

}  // namespace kiln::attn
