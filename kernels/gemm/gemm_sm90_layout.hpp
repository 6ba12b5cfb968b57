// The sm_90a GEMM's index math, host + device, so tests/cpu/gemm_sm90_layout_test.cpp can check
// on the CPU that the TMA boxes, the wgmma descriptors, the accumulator layout and the epilogue
// buffer compose into the right GEMM (it emulates TMA's 128-byte swizzle and wgmma's canonical
// shared-memory layouts, as the PTX ISA and CUTLASS's GMMA descriptors document them).
//
// Shared tiles of one stage (byte offsets from the operand's tile, which is 1024-byte aligned):
//   A, K-major (A (M, K)):   one TMA box {64 k, 128 m} at 0: row m, 128 bytes of k.
//   A, M-major (A (K, M)):   boxes h = 0, 1 {64 m, 64 k} at 8 KiB h: row k, 128 bytes of m.
//   B, K-major (B (N, K)):   one box {64 k, BN n} at 0.
//   B, N-major (B (K, N)):   boxes q = 0 .. BN / 64 - 1 {64 n, 64 k} at 8 KiB q.
// A 128-byte row's 16-byte chunk c lies at chunk c ^ (row % 8) (TMA's SWIZZLE_128B).
#pragma once

#include <cstdint>

#ifndef KILN_GEMM_HD
#if defined(__CUDACC__)
#define KILN_GEMM_HD __host__ __device__ __forceinline__ constexpr
#else
#define KILN_GEMM_HD inline constexpr
#endif
#endif

namespace kiln::dev::sm90 {

constexpr int kBM = 128, kBK = 64;
constexpr std::uint32_t kBoxBytes = 8192;  // 64 rows of 128 bytes
constexpr std::uint32_t kSbo = 1024;       // 8 rows of 128 bytes: the next group along K or M/N

// One TMA box of a stage: where it goes in the operand's tile and its coordinates (inner,
// outer) in elements in the global matrix.
struct Box {
  std::uint32_t smem;
  int c0, c1;
  int rows;  // box rows (outer extent); the inner extent is always 64 elements (128 bytes)
};

KILN_GEMM_HD int a_box_count(bool trans_a) {
  return trans_a ? kBM / 64 : 1;
}
KILN_GEMM_HD Box a_box(bool trans_a, int i, int tm, int kb) {
  if (!trans_a) return Box{0, kb * kBK, tm * kBM, kBM};
  return Box{kBoxBytes * i, tm * kBM + 64 * i, kb * kBK, kBK};
}
KILN_GEMM_HD int b_box_count(bool trans_b, int bn) {
  return trans_b ? 1 : bn / 64;
}
KILN_GEMM_HD Box b_box(bool trans_b, int i, int tn, int kb, int bn) {
  if (trans_b) return Box{0, kb * kBK, tn * bn, bn};
  return Box{kBoxBytes * i, tn * bn + 64 * i, kb * kBK, kBK};
}

// wgmma operands of consumer warpgroup cw (rows cw * 64 .. + 63 of the tile) at k step ks (16 k):
// the descriptor's start (bytes from the operand's tile), its leading byte offset, and whether the
// operand is M/N-major (wgmma's imm-trans). SBO is kSbo for all four.
//   K-major: the next 16 k are 32 bytes further along the rows; LBO is unused (16 by convention).
//   M/N-major: the next 16 k are two 8-row groups (2 KiB) further; LBO is the 8 KiB between
//   64-wide boxes.
KILN_GEMM_HD std::uint32_t a_desc_start(bool trans_a, int cw, int ks) {
  return kBoxBytes * cw + (trans_a ? 2048u : 32u) * ks;
}
KILN_GEMM_HD std::uint32_t b_desc_start(bool trans_b, int ks) {
  return (trans_b ? 32u : 2048u) * ks;
}
KILN_GEMM_HD std::uint32_t a_lbo(bool trans_a) {
  return trans_a ? kBoxBytes : 16u;
}
KILN_GEMM_HD std::uint32_t b_lbo(bool trans_b) {
  return trans_b ? 16u : kBoxBytes;
}
KILN_GEMM_HD int a_mn_major(bool trans_a) {
  return trans_a ? 1 : 0;
}
KILN_GEMM_HD int b_mn_major(bool trans_b) {
  return trans_b ? 0 : 1;
}

// Accumulator register i of thread t (0..127) of a warpgroup's 64 x N wgmma tile (PTX ISA, "wgmma
// D matrix fragment"; CUTLASS's CLayout_64xN): warp t / 32 owns rows 16 w .. 16 w + 15.
KILN_GEMM_HD int acc_row(int t, int i) {
  return 16 * (t / 32) + (t % 32) / 4 + 8 * ((i / 2) % 2);
}
KILN_GEMM_HD int acc_col(int t, int i) {
  return 8 * (i / 4) + 2 * (t % 4) + i % 2;
}

// Byte offset of byte `byte` (< 128) of row `row` in a 128-byte-swizzled tile.
KILN_GEMM_HD std::uint32_t sw128(std::uint32_t row, std::uint32_t byte) {
  return row * 128 + ((((byte >> 4) ^ row) & 7) << 4) + (byte & 15);
}

// bias_grad's shared-memory reads of one stage (row_sums_add), in this warpgroup's 64-row A slice:
// thread t's i-th 16-byte read (i < 4) and which rows of op(A) its 8 elements belong to.
//   K-major: row t / 2, logical chunks 4 (t % 2) + i: all 8 elements are row t / 2's.
//   M-major: k row 4 (t / 8) + i, m chunk t % 8: element e is row 8 (t % 8) + e's.
KILN_GEMM_HD std::uint32_t row_sums_read(bool trans_a, int t, int i) {
  if (!trans_a) return sw128(t >> 1, 16 * ((t & 1) * 4 + i));
  return sw128((t >> 3) * 4 + i, 16 * (t & 7));
}

}  // namespace kiln::dev::sm90
