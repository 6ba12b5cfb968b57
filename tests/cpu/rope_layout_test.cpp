// The rotary and SwiGLU kernels' index math (kernels/rope/rope_layout.hpp), on the CPU: the work
// items cover every element a call must write exactly once and nothing else, in 32- and 64-bit
// index arithmetic alike, and the 16-byte paths only ever address 16-byte aligned vectors. Then
// the rope kernels' item code itself (rope_item.hpp) run on the CPU against the reference.
#include <catch2/catch.hpp>

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/rope/rope_item.hpp"
#include "kernels/rope/rope_layout.hpp"
#include "kernels/rope/rope_ref.hpp"
#include "kiln/rope.h"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"
#include "tests/cpu/host_run.hpp"

namespace rl = kiln::rope_layout;
namespace kt = kiln::test;

namespace {

struct RopeShape {
  std::int64_t B, T, H, heads;  // heads >= H per token (packed QKV: the rest are V)
  int hd;
  std::int64_t pad_t, pad_b;
};

// Touches per element of one call, enumerating the items as the kernel's grid-stride loop does.
template <typename Index>
std::vector<int> rope_touches(const RopeShape& s, int vec, bool& aligned) {
  const std::int64_t st = s.heads * s.hd + s.pad_t, sb = s.T * st + s.pad_b;
  const auto g = rl::make_rope_grid(s.B, s.T, s.H, s.hd, sb, st, vec);
  std::vector<int> touched(static_cast<std::size_t>(s.B * sb), 0);
  aligned = true;
  for (std::int64_t i = 0; i < g.total; ++i) {
    const rl::RopeItem it = rl::locate(g, static_cast<Index>(i), vec);
    REQUIRE(it.heads >= 1);
    REQUIRE(it.heads <= rl::kHeads);
    REQUIRE(it.run * vec < s.hd / 2);
    for (int u = 0; u < it.heads; ++u) {
      for (const std::int64_t start : {it.offset + u * s.hd, it.offset + u * s.hd + s.hd / 2}) {
        if (start % vec != 0) aligned = false;  // x itself is 16-byte aligned
        for (int e = 0; e < vec; ++e)
          ++touched[static_cast<std::size_t>(start + e)];
      }
    }
  }
  return touched;
}

void check_rope_shape(const RopeShape& s, int vec) {
  CAPTURE(s.B, s.T, s.H, s.heads, s.hd, s.pad_t, s.pad_b, vec);
  const std::int64_t st = s.heads * s.hd + s.pad_t, sb = s.T * st + s.pad_b;
  bool aligned32 = false, aligned64 = false;
  const auto t32 = rope_touches<std::uint32_t>(s, vec, aligned32);
  const auto t64 = rope_touches<std::uint64_t>(s, vec, aligned64);
  CHECK(t32 == t64);
  std::int64_t wrong = 0;
  for (std::int64_t e = 0; e < static_cast<std::int64_t>(t32.size()); ++e) {
    const bool rotated = (e % sb) / st < s.T && (e % sb) % st < s.H * s.hd;
    if (t32[static_cast<std::size_t>(e)] != (rotated ? 1 : 0)) ++wrong;
  }
  CHECK(wrong == 0);
  if (rl::rope_vector_path(0, s.B, s.T, s.hd, sb, st, vec)) CHECK(aligned32);
}

}  // namespace

TEST_CASE("rope work items cover each rotated element once", "[rope][layout]") {
  const std::vector<RopeShape> shapes = {
      {2, 37, 40, 48, 64, 0, 0},  // Llama-3.2-1B packed QKV (NH 32, NKV 8)
      {1, 5, 32, 32, 64, 0, 0},   // separate Q
      {3, 4, 8, 8, 128, 0, 0},    // separate K, Llama 3.1
      {2, 3, 5, 7, 16, 8, 24},    // padded, vector-aligned strides
      {2, 3, 5, 6, 16, 1, 3},     // odd strides
      {1, 2, 3, 3, 6, 0, 0},      // HD / 2 = 3
      {2, 2, 9, 9, 130, 0, 0},    // HD / 2 = 65
      {1, 3, 1, 2, 256, 0, 0},    // the largest head dim
      {4, 1, 36, 40, 64, 0, 0},   // decoding (T = 1)
      {1, 1, 1, 1, 2, 0, 0}};     // the smallest
  for (const auto& s : shapes) {
    check_rope_shape(s, 1);
    if ((s.hd / 2) % 4 == 0) check_rope_shape(s, 4);  // fp32 vectors
    if ((s.hd / 2) % 8 == 0) check_rope_shape(s, 8);  // bf16 vectors
  }
}

TEST_CASE("rope's 16-byte path is chosen only where every access is aligned", "[rope][layout]") {
  CHECK(rl::rope_vector_path(0, 2, 16, 64, 16 * 48 * 64, 48 * 64, 8));
  CHECK_FALSE(rl::rope_vector_path(2, 2, 16, 64, 16 * 48 * 64, 48 * 64, 8));  // x misaligned
  CHECK_FALSE(rl::rope_vector_path(0, 2, 16, 8, 16 * 48 * 8, 48 * 8, 8));     // HD / 2 = 4 < 8
  CHECK(rl::rope_vector_path(0, 2, 16, 8, 16 * 48 * 8, 48 * 8, 4));           // fp32: 4 is a vector
  CHECK_FALSE(rl::rope_vector_path(0, 2, 16, 64, 16 * 48 * 64, 48 * 64 + 4, 8));
  CHECK_FALSE(rl::rope_vector_path(0, 2, 16, 64, 16 * 48 * 64 + 4, 48 * 64, 8));
  CHECK(rl::rope_vector_path(0, 1, 1, 64, 3, 5, 8));                  // strides unused at B = T = 1
  CHECK_FALSE(rl::rope_vector_path(0, 4, 1, 64, 48 * 64 + 3, 5, 8));  // decoding: stride_b counts
  CHECK(rl::rope_vector_path(0, 4, 1, 64, 48 * 64 + 8, 5, 8));        // stride_t does not
}

TEST_CASE("swiglu work items cover gate, up and out once each", "[swiglu][layout]") {
  for (const std::int64_t I : {1, 7, 8, 16, 24, 1536}) {
    for (const std::int64_t N : {1, 3}) {
      for (const int vec : {1, 4, 8}) {
        if (I % vec != 0) continue;
        CAPTURE(N, I, vec);
        const std::int64_t runs = I / vec;
        std::vector<int> gu(static_cast<std::size_t>(N * 2 * I), 0),
            out(static_cast<std::size_t>(N * I), 0);
        bool aligned = true;
        for (std::int64_t i = 0; i < N * runs; ++i) {
          std::int64_t gate = 0, col = 0, gate64 = 0, col64 = 0;
          rl::swiglu_locate(static_cast<std::uint32_t>(i), runs, I, vec, &gate, &col);
          rl::swiglu_locate(static_cast<std::uint64_t>(i), runs, I, vec, &gate64, &col64);
          CHECK(gate == gate64);
          CHECK(col == col64);
          if (gate % vec || (gate + I) % vec || col % vec) aligned = false;
          for (int e = 0; e < vec; ++e) {
            ++gu[static_cast<std::size_t>(gate + e)];
            ++gu[static_cast<std::size_t>(gate + I + e)];
            ++out[static_cast<std::size_t>(col + e)];
          }
        }
        CHECK(aligned);
        CHECK(gu == std::vector<int>(gu.size(), 1));
        CHECK(out == std::vector<int>(out.size(), 1));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The kernels' item code (rope_item.hpp) run on the CPU: every item of a call in turn over host
// arrays (bf16 emulated by rounding each stored value), against the double reference by the
// tolerance rule and against the fp32-angle baseline.
namespace {

using kiln::test::HostRun;

struct EmuCase {
  std::int64_t B, T, H, heads;
  kiln_rope_config_t config;
  std::int64_t pos_offset;
};

template <int kVec, bool kBf16, bool kTranspose>
void check_emulated(const EmuCase& c, std::mt19937_64& rng) {
  const int hd = static_cast<int>(c.config.head_dim);
  CAPTURE(c.B, c.T, c.H, c.heads, hd, c.pos_offset, kVec, kBf16, kTranspose);
  const std::int64_t st = c.heads * hd, sb = c.T * st, n = c.B * sb;
  auto x = kt::random_uniform(static_cast<std::size_t>(n), -2.0f, 2.0f, rng);
  if (kBf16) x = kt::round_to_bf16(x);
  auto ref = kt::to_double(x);
  auto base = x;
  if (kTranspose) {
    kiln::ref::rope_bwd_ref<double>(ref.data(), c.B, c.T, c.H, sb, st, c.pos_offset, c.config);
    kiln::ref::rope_bwd_ref<float, float>(base.data(), c.B, c.T, c.H, sb, st, c.pos_offset,
                                          c.config);
  } else {
    kiln::ref::rope_fwd_ref<double>(ref.data(), c.B, c.T, c.H, sb, st, c.pos_offset, c.config);
    kiln::ref::rope_fwd_ref<float, float>(base.data(), c.B, c.T, c.H, sb, st, c.pos_offset,
                                          c.config);
  }
  if (kBf16) base = kt::round_to_bf16(base);
  std::vector<float> inv(static_cast<std::size_t>(hd / 2));
  REQUIRE(kiln_rope_inv_freq(&c.config, inv.data()) == KILN_STATUS_OK);
  const auto g = rl::make_rope_grid(c.B, c.T, c.H, hd, sb, st, kVec);
  auto got = x;
  for (std::int64_t i = 0; i < g.total; ++i)
    rl::rope_item<HostRun<kVec, kBf16>, kVec, kTranspose>(
        got.data(), g, inv.data(), static_cast<int>(c.pos_offset), static_cast<std::uint32_t>(i));
  const auto gd = kt::to_double(got), bd = kt::to_double(base);
  const double scale = 2.0 * std::sqrt(2.0);
  kt::check_rule("x", ref, gd, bd, kBf16 ? scale / 256 / 16 : scale * 8 / (1 << 23));
  if (kBf16) {
    kt::check_close("x vs the fp32-angle baseline", bd, gd, 1.0 / 128, 1.0 / 64);
  } else {
    kt::check_close("x vs the fp32-angle baseline", bd, gd, 1e-6, 2e-6);
  }
}

template <int kVec, bool kBf16>
void check_emulated_both(const EmuCase& c, std::mt19937_64& rng) {
  check_emulated<kVec, kBf16, false>(c, rng);
  check_emulated<kVec, kBf16, true>(c, rng);
}

kiln_rope_config_t emu_config(std::int64_t hd, bool llama3) {
  kiln_rope_config_t c{};
  c.head_dim = hd;
  c.theta = llama3 ? 500000 : 10000;
  c.scaling = llama3 ? KILN_ROPE_SCALING_LLAMA3 : KILN_ROPE_SCALING_NONE;
  c.factor = 32;
  c.low_freq_factor = 1;
  c.high_freq_factor = 4;
  c.original_max_position = 8192;
  return c;
}

}  // namespace

TEST_CASE("the rope kernels' item code, run on the CPU, matches the reference", "[rope][layout]") {
  auto rng = kt::make_rng(1607);
  // Llama-3.2-1B packed QKV (Q and K of 32 + 8 heads in rows of 48), bf16 vectors and scalars.
  const EmuCase packed{2, 9, 40, 48, emu_config(64, true), 0};
  check_emulated_both<8, true>(packed, rng);
  check_emulated_both<1, true>(packed, rng);
  check_emulated_both<4, false>(packed, rng);
  check_emulated_both<1, false>(packed, rng);
  // Large positions, an odd head count, a half head no vector divides.
  check_emulated_both<8, true>(EmuCase{1, 5, 7, 7, emu_config(128, true), 131000}, rng);
  check_emulated_both<4, false>(EmuCase{1, 5, 7, 7, emu_config(128, true), 131000}, rng);
  check_emulated_both<1, false>(EmuCase{2, 3, 3, 3, emu_config(6, false), 17}, rng);
  check_emulated_both<1, true>(EmuCase{1, 4, 5, 6, emu_config(130, false), (1 << 30)}, rng);
}
