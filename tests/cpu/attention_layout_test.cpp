// The sm_80 attention kernels' shared-memory index math, checked on the CPU: tiles are written
// through the swizzle exactly as load_tile writes them, then every ldmatrix the kernels issue is
// emulated (PTX semantics, plain and .trans) from the per-lane addresses the kernels compute, and
// each lane's registers must hold exactly the mma.m16n8k16 fragment elements the kernels assume.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "kernels/attention/attention_layout.hpp"

using kiln::attn::LaneOffsets;
using kiln::attn::swz;

namespace {

// A tile image whose every element holds its own logical (row, col), placed at swz(row, col).
template <int kCols>
std::vector<std::pair<int, int>> tile_image(int rows) {
  std::vector<std::pair<int, int>> smem(static_cast<size_t>(rows * kCols), {-1, -1});
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < kCols; ++c)
      smem[static_cast<size_t>(swz<kCols>(r, c))] = {r, c};
  return smem;
}

using Elem = std::pair<int, int>;                 // logical (row, col) of a tile element
using Regs = std::array<std::array<Elem, 2>, 4>;  // 4 registers x 2 bf16 halves (low first)

// ldmatrix.x4: matrix i's row r is the 16 bytes at the address lane 8 i + r gives. Plain: lane l
// receives row l / 4, elements 2 (l % 4) and +1 of each matrix; .trans: elements (2 (l % 4), l / 4)
// and (2 (l % 4) + 1, l / 4) of it.
std::array<Regs, 32> ldmatrix_x4(const std::vector<Elem>& smem,
                                 const std::array<uint32_t, 32>& addr, bool trans) {
  std::array<Regs, 32> out{};
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i)
      for (int h = 0; h < 2; ++h) {
        const int r = trans ? 2 * (l % 4) + h : l / 4;
        const int c = trans ? l / 4 : 2 * (l % 4) + h;
        const uint32_t byte = addr[8 * i + r];
        REQUIRE(byte % 16 == 0);  // ldmatrix rows are 16-byte aligned
        out[l][i][h] = smem.at(byte / 2 + c);
      }
  return out;
}

// mma.m16n8k16 fragments (lane = 4 g + t):
//  A (16 m x 16 k): reg 0 (m g, k 2t..), 1 (m g + 8, k 2t..), 2 (m g, k 2t + 8..), 3 (m g + 8, ..).
//  B (16 k x 8 n): reg 0 (k 2t, 2t + 1; n g), reg 1 (k 2t + 8, 2t + 9; n g).
// `at(m_or_n, k)` maps a fragment coordinate to the logical tile element holding it.
template <typename At>
void expect_a(const std::array<Regs, 32>& got, At at) {
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i)
      for (int h = 0; h < 2; ++h) {
        const int m = g + (i & 1) * 8, k = 2 * t + h + (i >> 1) * 8;
        INFO("lane " << l << " reg " << i << " half " << h);
        REQUIRE(got[l][i][h] == at(m, k));
      }
  }
}
// Two n8 B tiles: regs {0, 1} n-tile 0, {2, 3} n-tile 1.
template <typename At>
void expect_b2(const std::array<Regs, 32>& got, At at) {
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i)
      for (int h = 0; h < 2; ++h) {
        const int n = g + (i >> 1) * 8, k = 2 * t + h + (i & 1) * 8;
        INFO("lane " << l << " reg " << i << " half " << h);
        REQUIRE(got[l][i][h] == at(n, k));
      }
  }
}

template <int kCols>
std::array<uint32_t, 32> lane_addrs(LaneOffsets<kCols> (*pattern)(int, int), int row_base, int r0,
                                    int c0) {
  std::array<uint32_t, 32> a{};
  for (int l = 0; l < 32; ++l)
    a[l] = pattern(l, row_base).at(r0, c0);
  return a;
}

template <int kCols>
void check_all_operands(int rows) {
  const auto smem = tile_image<kCols>(rows);
  for (int row_base = 0; row_base < rows; row_base += 16)
    for (int r0 = 0; row_base + r0 + 16 <= rows; r0 += 16)
      for (int c0 = 0; c0 < kCols / 8; c0 += 2) {
        INFO("cols " << kCols << " row_base " << row_base << " r0 " << r0 << " c0 " << c0);
        const int R = row_base + r0, C = c0 * 8;
        // A from a row-major tile (Q, K/V rows in the backward, dO rows): element (m, k).
        expect_a(ldmatrix_x4(smem, lane_addrs<kCols>(kiln::attn::lanes_a<kCols>, row_base, r0, c0),
                             false),
                 [&](int m, int k) {
                   return Elem{R + m, C + k};
                 });
        // B from an n-major tile (K in Q K^T): element (n, k) at row n.
        expect_b2(
            ldmatrix_x4(smem, lane_addrs<kCols>(kiln::attn::lanes_bn<kCols>, row_base, r0, c0),
                        false),
            [&](int n, int k) {
              return Elem{R + n, C + k};
            });
        // B from a k-major tile with .trans (V in P V): element (n, k) at row k, column n.
        expect_b2(ldmatrix_x4(
                      smem, lane_addrs<kCols>(kiln::attn::lanes_bk<kCols>, row_base, r0, c0), true),
                  [&](int n, int k) {
                    return Elem{R + k, C + n};
                  });
        // A from a k-major tile with .trans (dS^T): element (m, k) at row k, column m.
        expect_a(ldmatrix_x4(smem, lane_addrs<kCols>(kiln::attn::lanes_at<kCols>, row_base, r0, c0),
                             true),
                 [&](int m, int k) {
                   return Elem{R + k, C + m};
                 });
      }
}

}  // namespace

TEST_CASE("attention sm_80 swizzle is a bijection that keeps 16-byte chunks whole", "[attention]") {
  for (const int cols : {64, 128}) {
    std::set<int> seen;
    for (int r = 0; r < 64; ++r)
      for (int c = 0; c < cols; ++c) {
        const int o = cols == 64 ? swz<64>(r, c) : swz<128>(r, c);
        CHECK(o / cols == r);   // stays in its row
        CHECK(o % 8 == c % 8);  // keeps its place inside the chunk
        seen.insert(o);
      }
    CHECK(seen.size() == static_cast<size_t>(64 * cols));
  }
  // Eight rows read at one logical chunk land in eight distinct 16-byte bank groups (of a 128-byte
  // line): the conflict-free property the swizzle is for.
  for (int c = 0; c < 16; ++c) {
    std::set<int> groups;
    for (int r = 0; r < 8; ++r)
      groups.insert((swz<128>(r, c * 8) * 2 / 16) % 8);
    CHECK(groups.size() == 8);
  }
}

TEST_CASE("attention sm_80 ldmatrix addresses deliver the mma fragments (HD 64, 128; dS 64)",
          "[attention]") {
  check_all_operands<64>(64);
  check_all_operands<128>(128);
}

TEST_CASE("attention sm_80 load_tile passes land where the swizzle puts their rows",
          "[attention]") {
  const auto check = [](auto map, int rows) {
    using Map = decltype(map);
    std::set<uint32_t> written;
    for (int tid = 0; tid < 128; ++tid)
      for (int i = 0; i < rows / Map::kRowsPerPass; ++i) {
        const int row = Map::row(tid) + i * Map::kRowsPerPass;
        const uint32_t expected =
            static_cast<uint32_t>(swz<Map::kChunksPerRow * 8>(row, Map::col(tid)) * 2);
        CHECK(Map::offset(tid, i) == expected);
        written.insert(expected);
      }
    CHECK(written.size() == static_cast<size_t>(rows * Map::kChunksPerRow));  // every chunk once
  };
  check(kiln::attn::TileLoadMap<64, 128>{}, 128);
  check(kiln::attn::TileLoadMap<128, 128>{}, 128);
  check(kiln::attn::TileLoadMap<128, 128>{}, 64);
}

TEST_CASE("attention sm_80 fixed-column transposed read of dS^T gives the dQ A fragment",
          "[attention]") {
  constexpr int kBr = 64;  // dS^T: 64 keys x 64 queries
  const auto smem = tile_image<kBr>(64);
  for (int warp = 0; warp < 4; ++warp)
    for (int kk = 0; kk < 4; ++kk) {
      std::array<uint32_t, 32> addr{};
      for (int l = 0; l < 32; ++l)
        addr[l] = kiln::attn::lane_at_fixed_m<kBr>(l, warp) + kk * 16 * kBr * 2;
      INFO("warp " << warp << " kk " << kk);
      // A (m = query of this warp's 16, k = key of this 16-key step) at row key, column query.
      expect_a(ldmatrix_x4(smem, addr, true), [&](int m, int k) {
        return Elem{kk * 16 + k, warp * 16 + m};
      });
    }
}
