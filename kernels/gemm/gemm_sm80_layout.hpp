// The sm_80 GEMM's index math, host + device, so tests/cpu/gemm_sm80_layout_test.cpp can check
// on the CPU (emulating cp.async, ldmatrix and mma.m16n8k16 as the PTX ISA documents them) that
// the shared tiles, the fragment loads and the epilogue compose into the right GEMM.
//
// CTA tile kBM x kBN x kBK; shared tiles in two shapes, by which dimension is contiguous:
//   K-contiguous  [128 rows][32 k]  64-byte rows of 4 chunks; chunk c of row r at c ^ ((r / 2) % 4)
//   MN-contiguous [32 k][128 cols]  256-byte rows of 16 chunks; chunk c of row r at c ^ (r % 8)
// so the 8 rows of every ldmatrix fall in 8 different bank groups.
#pragma once

#include <cstdint>

#ifndef KILN_GEMM_HD
#if defined(__CUDACC__)
#define KILN_GEMM_HD __host__ __device__ __forceinline__ constexpr
#else
#define KILN_GEMM_HD inline constexpr
#endif
#endif

namespace kiln::dev::sm80 {

constexpr int kBM = 128, kBN = 128, kBK = 32, kStages = 4, kThreads = 256;
constexpr int kTileBytes = kBM * kBK * 2;  // 8 KiB, both tile shapes

// Byte offset of 16-byte chunk c of row r.
KILN_GEMM_HD std::uint32_t k_tile_chunk(int r, int c) {
  return static_cast<std::uint32_t>((r * 4 + (c ^ ((r >> 1) & 3))) * 16);
}
KILN_GEMM_HD std::uint32_t mn_tile_chunk(int r, int c) {
  return static_cast<std::uint32_t>((r * 16 + (c ^ (r & 7))) * 16);
}

// The (row, chunk) of copy i (0, 1) of thread `tid` when filling a tile: 512 chunks, 2 each.
struct RowChunk {
  int row, chunk;
};
KILN_GEMM_HD RowChunk k_tile_copy(int tid, int i) {
  const int id = tid + i * kThreads;
  return RowChunk{id >> 2, id & 3};
}
KILN_GEMM_HD RowChunk mn_tile_copy(int tid, int i) {
  const int id = tid + i * kThreads;
  return RowChunk{id >> 4, id & 15};
}

// The row address lane `lane` gives ldmatrix.x4 for the A fragment of the 16 x 16 block at
// (m0, kk) (rows m, k within the tile): matrices (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15),
// (m 8-15, k 8-15) = registers a0..a3 of mma.m16n8k16. M-major tiles store them as k rows and
// are read with .trans.
KILN_GEMM_HD std::uint32_t a_frag_addr(bool mn_major, int lane, int m0, int kk) {
  const int j = lane >> 3, r = lane & 7;
  if (!mn_major) return k_tile_chunk(m0 + r + 8 * (j & 1), (kk >> 3) + (j >> 1));
  return mn_tile_chunk(kk + r + 8 * (j >> 1), (m0 >> 3) + (j & 1));
}
// The same for the B fragments of two n8 tiles at (n0, kk): matrices (n 0-7, k 0-7),
// (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) = b0, b1 of tile n0 and b0, b1 of n0 + 8.
KILN_GEMM_HD std::uint32_t b_frag_addr(bool mn_major, int lane, int n0, int kk) {
  const int j = lane >> 3, r = lane & 7;
  if (!mn_major) return k_tile_chunk(n0 + r + 8 * (j >> 1), (kk >> 3) + (j & 1));
  return mn_tile_chunk(kk + r + 8 * (j & 1), (n0 >> 3) + (j >> 1));
}

// Warp w's 64 x 32 block of the CTA tile, and where accumulator v of its mma tile (i, j) sits.
KILN_GEMM_HD int warp_row0(int warp) {
  return (warp >> 2) * 64;
}
KILN_GEMM_HD int warp_col0(int warp) {
  return (warp & 3) * 32;
}
KILN_GEMM_HD int acc_row(int lane, int i, int v) {
  return i * 16 + (lane >> 2) + 8 * (v >> 1);
}
KILN_GEMM_HD int acc_col(int lane, int j, int v) {
  return j * 8 + 2 * (lane & 3) + (v & 1);
}

}  // namespace kiln::dev::sm80
