// The sm_90a attention kernels' index math, host + device, so that
// tests/cpu/attention_sm90_layout_test.cpp can check on the CPU (emulating TMA's 128-byte swizzle,
// wgmma's canonical shared-memory layouts and its register fragments as the PTX ISA documents
// them) that the backward's tiles, descriptors, fragments, dS^T tile and dQ accumulator order
// compose into the right products.
//
// Tiles: R rows x HD bf16 columns as HD / 64 column blocks, each R rows of 128 bytes in TMA's
// 128-byte swizzle (chunk c of row r at chunk c ^ (r % 8)), block c at byte c * R * 128; every tile
// starts 1024-byte aligned.
#pragma once

#include <cstdint>

#include "kernels/attention/attention_dispatch.hpp"

#if defined(__CUDACC__)
#define KILN_ATTN90_HD __host__ __device__ __forceinline__ constexpr
#else
#define KILN_ATTN90_HD inline constexpr
#endif

namespace kiln::attn::sm90 {

// ---- wgmma descriptors (start offsets from a tile, leading / stride byte offsets) ---------------

constexpr std::uint32_t kSbo = 1024;      // the next 8-row group: 8 rows of 128 bytes
constexpr std::uint32_t kKmajorLbo = 16;  // unused by K-major swizzled operands (1 by convention)

// K-major operand (a row is one M / N index, the K index runs along it): k-step kk (16 columns)
// starts 32 bytes further in its 64-column block; blocks are rows * 128 bytes apart.
KILN_ATTN90_HD std::uint32_t kmajor_offset(int rows, int kk) {
  return static_cast<std::uint32_t>((kk / 4) * rows * 128 + (kk % 4) * 32);
}
// M/N-major operand (a row is one K index, the M / N index runs along it): k-step kk (16 rows) is
// two 1024-byte atoms further; LBO is the distance between 64-wide M / N column blocks.
KILN_ATTN90_HD std::uint32_t mn_offset(int kk) {
  return static_cast<std::uint32_t>(kk * 2048);
}
KILN_ATTN90_HD std::uint32_t mn_lbo(int rows) {
  return static_cast<std::uint32_t>(rows * 128);
}

// ---- register fragments -------------------------------------------------------------------------

// Shifts and masks rather than / and %: t and i are never negative, and signed division costs
// the kernels registers.
//
// Accumulator register i of thread t (0..127) of a warpgroup's 64 x N wgmma tile.
KILN_ATTN90_HD int acc_row(int t, int i) {
  return ((t >> 5) << 4) + ((t & 31) >> 2) + (((i >> 1) & 1) << 3);
}
KILN_ATTN90_HD int acc_col(int t, int i) {
  return ((i >> 2) << 3) + ((t & 3) << 1) + (i & 1);
}

// wgmma's A operand from registers, k-step kk: packed register r (0..3), half h (0 low, 1 high)
// takes accumulator register a_frag_acc(kk, r, h) of the 64 x K product that feeds it (P^T, dS^T:
// the accumulator's 16 columns 16 kk .. 16 kk + 15 are the A operand's 16 k).
KILN_ATTN90_HD int a_frag_acc(int kk, int r, int h) {
  return 8 * kk + 2 * r + h;
}
// The A element packed register r, half h of thread t holds, within the k-step: (row, k).
KILN_ATTN90_HD int a_frag_row(int t, int r) {
  return ((t >> 5) << 4) + ((t & 31) >> 2) + ((r & 1) << 3);
}
KILN_ATTN90_HD int a_frag_k(int t, int r, int h) {
  return ((r >> 1) << 3) + ((t & 3) << 1) + h;
}

// ---- backward -----------------------------------------------------------------------------------

constexpr int kBwdN = 128;        // keys per CTA: 2 consumer warpgroups x 64
constexpr int kDqPart = 64 * 64;  // floats of one warpgroup's dQ part

// Queries per block: the tile choice of attention_dispatch.hpp (0 for a head dim without one).
KILN_ATTN90_HD int bwd_block_m(int hd) {
  return sm90_bwd_queries(hd);
}
// A block's dQ (queries x hd) is two 64 x 64 parts, one per consumer warpgroup: side by side
// along the queries (128 queries, HD 64) or along the head dim (64 queries, HD 128).
KILN_ATTN90_HD bool dq_parts_along_queries(int hd) {
  return bwd_block_m(hd) == 128;
}

// dS^T tile (keys x queries of one block, kBwdN rows, 64-query column blocks): byte offset of the
// bf16 pair at (key, query), query even.
KILN_ATTN90_HD std::uint32_t ds_offset(int key, int query) {
  const std::uint32_t byte = static_cast<std::uint32_t>(query % 64) * 2;
  return static_cast<std::uint32_t>((query / 64) * kBwdN * 128 + key * 128) +
         ((((byte >> 4) ^ static_cast<std::uint32_t>(key)) & 7) << 4) + (byte & 15);
}

// The dQ part of consumer warpgroup cw: 64 queries x 64 columns of HD, at query block qb and
// column block hb.
KILN_ATTN90_HD int dq_part_qb(int hd, int cw) {
  return dq_parts_along_queries(hd) ? cw : 0;
}
KILN_ATTN90_HD int dq_part_hb(int hd, int cw) {
  return dq_parts_along_queries(hd) ? 0 : cw;
}

// A part in shared memory and in the accumulator, in accumulator order: thread t's registers
// 4 j .. 4 j + 3 as one float4 at float 512 j + 4 t (conflict-free stores).
KILN_ATTN90_HD int dq_part_index(int t, int i) {
  return ((i >> 2) << 9) + (t << 2) + (i & 3);
}
// Where the accumulator order keeps part element (row, col) (both < 64): dq_part_index of the
// thread and register that wgmma left it in.
KILN_ATTN90_HD int dq_part_find(int row, int col) {
  const int t = 32 * (row / 16) + 4 * (row % 8) + (col % 8) / 2;
  const int i = 4 * (col / 8) + 2 * ((row % 16) / 8) + col % 2;
  return dq_part_index(t, i);
}
// Query q (< the block's queries) and column col of a query block: which part, and the element
// of that part.
KILN_ATTN90_HD int dq_part_of(int hd, int q, int col) {
  return dq_parts_along_queries(hd) ? q / 64 : col / 64;
}

}  // namespace kiln::attn::sm90
