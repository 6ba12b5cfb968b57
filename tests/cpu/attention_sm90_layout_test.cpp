// The sm_90a attention backward's index math (kernels/attention/attention_sm90_layout.hpp)
// emulated on the CPU for one CTA and one query block: TMA writes K, V, Q, dO into their tiles
// with the 128-byte swizzle, wgmma reads its operands through the descriptors the kernel builds
// (start, LBO, SBO, K- or M/N-major) as the PTX ISA's canonical layouts define them, accumulators
// and register A operands follow the PTX ISA's fragment layouts (written out here, independently
// of the header), dS^T goes through its shared tile, and the dQ parts through the accumulator
// order into dQ as the conversion kernel reads them. With the elementwise steps (P from S, dS from
// dP) taken as the identity, which changes no index, the results must be the exact products
// S^T = K Q^T, dV = S^T dO, dK = dP^T Q, dQ = dP K for both head dims (small integers: exact).
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention/attention_sm90_layout.hpp"

namespace L = kiln::attn::sm90;

namespace {

// Shared memory as bf16 slots holding small integers as floats.
struct Smem {
  std::vector<float> v;
  explicit Smem(std::size_t bytes) : v(bytes / 2, 0.0f) {}
  float& at(std::uint32_t byte) {
    if (byte % 2 != 0 || byte / 2 >= v.size())  // not REQUIRE: this runs millions of times
      throw std::out_of_range("shared memory byte " + std::to_string(byte));
    return v[byte / 2];
  }
};

// The 128-byte swizzle of a 1024-aligned tile: address bits 4-6 XOR bits 7-9.
std::uint32_t swizzle(std::uint32_t a) {
  return a ^ (((a >> 7) & 7) << 4);
}

// TMA, SWIZZLE_128B, boxes of 64 columns x `rows` rows: column block cb of a rows x hd row-major
// matrix to tile + cb * rows * 128.
void tma_tile(Smem& s, std::uint32_t tile, const std::vector<float>& x, int rows, int hd) {
  REQUIRE(tile % 1024 == 0);
  for (int cb = 0; cb < hd / 64; ++cb)
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < 64; ++c)
        s.at(swizzle(tile + cb * rows * 128 + r * 128 + 2 * c)) = x[r * hd + cb * 64 + c];
}

// wgmma's view of a swizzled operand (PTX ISA "Shared Memory Matrix Layout"; CUTLASS
// make_gmma_desc): element (mn, k), k < 16, of the operand whose descriptor starts at `start`.
float wgmma_read(Smem& s, std::uint32_t start, std::uint32_t lbo, bool mn_major, int mn, int k) {
  const std::uint32_t sbo = 1024;
  const std::uint32_t a =
      mn_major ? start + 2 * (mn % 64) + (mn / 64) * lbo + (k % 8) * 128 + (k / 8) * sbo
               : start + (mn % 8) * 128 + (mn / 8) * sbo + 2 * k;
  return s.at(swizzle(a));
}

// PTX ISA wgmma fragments (written out here, not taken from the header): accumulator register i
// of thread t, and element e (0..7, two per packed register) of the A operand from registers.
int spec_acc_row(int t, int i) {
  return 16 * (t / 32) + (t % 32) / 4 + ((i % 4) >= 2 ? 8 : 0);
}
int spec_acc_col(int t, int i) {
  return 8 * (i / 4) + 2 * (t % 4) + (i % 2);
}
int spec_a_row(int t, int e) {
  return 16 * (t / 32) + (t % 32) / 4 + ((e / 2) % 2 ? 8 : 0);
}
int spec_a_col(int t, int e) {
  return (e >= 4 ? 8 : 0) + 2 * (t % 4) + (e % 2);
}

// A warpgroup's accumulators: acc[t * regs + i].
struct Acc {
  int n;
  std::vector<float> v;
  explicit Acc(int n_) : n(n_), v(static_cast<std::size_t>(128 * n_ / 2), 0.0f) {}
  float& at(int t, int i) { return v[static_cast<std::size_t>(t * (n / 2) + i)]; }
};

// d += A (64 x 16) B (16 x n), A from a product `a(m, k)`, B from shared memory.
template <typename AFn>
void wgmma(Acc& d, AFn a, Smem& s, std::uint32_t b_start, std::uint32_t b_lbo, bool b_mn) {
  std::vector<float> prod(static_cast<std::size_t>(64 * d.n), 0.0f);
  for (int m = 0; m < 64; ++m)
    for (int n = 0; n < d.n; ++n) {
      float sum = 0;
      for (int k = 0; k < 16; ++k)
        sum += a(m, k) * wgmma_read(s, b_start, b_lbo, b_mn, n, k);
      prod[static_cast<std::size_t>(m * d.n + n)] = sum;
    }
  for (int t = 0; t < 128; ++t)
    for (int i = 0; i < d.n / 2; ++i)
      d.at(t, i) += prod[static_cast<std::size_t>(spec_acc_row(t, i) * d.n + spec_acc_col(t, i))];
}
void wgmma_ss(Acc& d, Smem& s, std::uint32_t a_start, std::uint32_t a_lbo, bool a_mn,
              std::uint32_t b_start, std::uint32_t b_lbo, bool b_mn) {
  wgmma(
      d, [&](int m, int k) { return wgmma_read(s, a_start, a_lbo, a_mn, m, k); }, s, b_start, b_lbo,
      b_mn);
}
// A from registers: the kernel packs accumulator registers of `src` for k-step kk; wgmma reads
// packed register r, half h of thread t as element 2 r + h of the PTX A fragment.
void wgmma_rs(Acc& d, Acc& src, int kk, Smem& s, std::uint32_t b_start, std::uint32_t b_lbo) {
  std::vector<float> a(64 * 16, 0.0f);
  std::vector<int> seen(64 * 16, 0);
  for (int t = 0; t < 128; ++t)
    for (int r = 0; r < 4; ++r)
      for (int h = 0; h < 2; ++h) {
        const int e = 2 * r + h;
        const int m = spec_a_row(t, e), k = spec_a_col(t, e);
        a[static_cast<std::size_t>(m * 16 + k)] = src.at(t, L::a_frag_acc(kk, r, h));
        ++seen[static_cast<std::size_t>(m * 16 + k)];
      }
  for (const int x : seen)
    REQUIRE(x == 1);
  wgmma(
      d, [&](int m, int k) { return a[static_cast<std::size_t>(m * 16 + k)]; }, s, b_start, b_lbo,
      true);
}

std::vector<float> small_ints(int n, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(-2, 2);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v)
    x = static_cast<float>(dist(rng));
  return v;
}

void emulate_backward(int hd) {
  const int M = L::bwd_block_m(hd), N = L::kBwdN;
  std::mt19937 rng(static_cast<unsigned>(hd));
  const auto K = small_ints(N * hd, rng), V = small_ints(N * hd, rng);
  const auto Q = small_ints(M * hd, rng), dO = small_ints(M * hd, rng);
  // Tiles as the kernel's Smem lays them out (each 1024-aligned).
  const std::uint32_t kv_bytes = static_cast<std::uint32_t>(N * hd * 2),
                      q_bytes = static_cast<std::uint32_t>(M * hd * 2);
  const std::uint32_t k_tile = 0, v_tile = kv_bytes, q_tile = 2 * kv_bytes,
                      do_tile = q_tile + q_bytes, ds_tile = do_tile + q_bytes;
  Smem s(ds_tile + static_cast<std::uint32_t>(N * M * 2));
  tma_tile(s, k_tile, K, N, hd);
  tma_tile(s, v_tile, V, N, hd);
  tma_tile(s, q_tile, Q, M, hd);
  tma_tile(s, do_tile, dO, M, hd);

  std::vector<float> dk(static_cast<std::size_t>(N * hd)), dv(dk.size());
  std::vector<int> ds_written(static_cast<std::size_t>(N * M), 0);
  for (int cw = 0; cw < 2; ++cw) {
    const std::uint32_t k_rows = k_tile + cw * 64 * 128, v_rows = v_tile + cw * 64 * 128;
    Acc st(M), dpt(M);  // S^T, dP^T: 64 keys x M queries
    for (int kk = 0; kk < hd / 16; ++kk) {
      wgmma_ss(st, s, k_rows + L::kmajor_offset(N, kk), L::kKmajorLbo, false,
               q_tile + L::kmajor_offset(M, kk), L::kKmajorLbo, false);
      wgmma_ss(dpt, s, v_rows + L::kmajor_offset(N, kk), L::kKmajorLbo, false,
               do_tile + L::kmajor_offset(M, kk), L::kKmajorLbo, false);
    }
    // P^T := S^T and dS^T := dP^T (the elementwise steps move no element).
    Acc dva(hd), dka(hd);
    for (int kk = 0; kk < M / 16; ++kk) {
      wgmma_rs(dva, st, kk, s, do_tile + L::mn_offset(kk), L::mn_lbo(M));
      wgmma_rs(dka, dpt, kk, s, q_tile + L::mn_offset(kk), L::mn_lbo(M));
    }
    // dS^T to its tile: the kernel's pair stores (packed register r of k-step kk, both halves).
    for (int t = 0; t < 128; ++t)
      for (int kk = 0; kk < M / 16; ++kk)
        for (int r = 0; r < 4; ++r) {
          const int key = cw * 64 + L::a_frag_row(t, r);
          const int query = 16 * kk + L::a_frag_k(t, r, 0);
          REQUIRE(query % 2 == 0);
          REQUIRE(L::a_frag_k(t, r, 1) == L::a_frag_k(t, r, 0) + 1);
          const std::uint32_t at = ds_tile + L::ds_offset(key, query);
          s.at(at) = dpt.at(t, L::a_frag_acc(kk, r, 0));
          s.at(at + 2) = dpt.at(t, L::a_frag_acc(kk, r, 1));
          ds_written[static_cast<std::size_t>(key * M + query)]++;
          ds_written[static_cast<std::size_t>(key * M + query + 1)]++;
        }
    // The epilogue's view of the dK, dV accumulators.
    for (int t = 0; t < 128; ++t)
      for (int i = 0; i < hd / 2; ++i) {
        const std::size_t at =
            static_cast<std::size_t>((cw * 64 + L::acc_row(t, i)) * hd + L::acc_col(t, i));
        dk[at] = dka.at(t, i);
        dv[at] = dva.at(t, i);
      }
  }
  for (const int x : ds_written)
    REQUIRE(x == 1);

  // dQ parts (after the barrier: both warpgroups' dS^T), into one query block's accumulator.
  std::vector<float> accum(2 * L::kDqPart, 0.0f);
  std::vector<int> acc_written(accum.size(), 0);
  for (int cw = 0; cw < 2; ++cw) {
    Acc dq(64);
    const std::uint32_t a0 = ds_tile + L::dq_part_qb(hd, cw) * N * 128;
    const std::uint32_t b0 = k_tile + L::dq_part_hb(hd, cw) * N * 128;
    for (int kk = 0; kk < N / 16; ++kk)
      wgmma_ss(dq, s, a0 + L::mn_offset(kk), L::mn_lbo(N), true, b0 + L::mn_offset(kk),
               L::mn_lbo(N), true);
    for (int t = 0; t < 128; ++t)
      for (int i = 0; i < 32; ++i) {
        const std::size_t at = static_cast<std::size_t>(cw * L::kDqPart + L::dq_part_index(t, i));
        accum[at] += dq.at(t, i);
        ++acc_written[at];
      }
  }
  for (const int x : acc_written)
    REQUIRE(x == 1);

  // The exact products: S^T, dP^T (keys x queries) first.
  std::vector<float> st(static_cast<std::size_t>(N * M), 0.0f), dpt(st.size(), 0.0f);
  for (int key = 0; key < N; ++key)
    for (int q = 0; q < M; ++q)
      for (int e = 0; e < hd; ++e) {
        st[static_cast<std::size_t>(key * M + q)] += K[key * hd + e] * Q[q * hd + e];
        dpt[static_cast<std::size_t>(key * M + q)] += V[key * hd + e] * dO[q * hd + e];
      }
  std::size_t wrong_dv = 0, wrong_dk = 0, wrong_dq = 0;
  for (int key = 0; key < N; ++key)
    for (int d = 0; d < hd; ++d) {
      float want_dv = 0, want_dk = 0;
      for (int q = 0; q < M; ++q) {
        want_dv += st[static_cast<std::size_t>(key * M + q)] * dO[q * hd + d];
        want_dk += dpt[static_cast<std::size_t>(key * M + q)] * Q[q * hd + d];
      }
      wrong_dv += dv[static_cast<std::size_t>(key * hd + d)] != want_dv;
      wrong_dk += dk[static_cast<std::size_t>(key * hd + d)] != want_dk;
    }
  for (int q = 0; q < M; ++q)
    for (int d = 0; d < hd; ++d) {
      float want = 0;
      for (int key = 0; key < N; ++key)
        want += dpt[static_cast<std::size_t>(key * M + q)] * K[key * hd + d];
      // The conversion kernel's read of (q, d).
      const int part = L::dq_part_of(hd, q, d);
      const float got =
          accum[static_cast<std::size_t>(part * L::kDqPart + L::dq_part_find(q % 64, d % 64))];
      wrong_dq += got != want;
    }
  INFO("HD " << hd << ": wrong dV " << wrong_dv << ", dK " << wrong_dk << ", dQ " << wrong_dq);
  CHECK(wrong_dv == 0);
  CHECK(wrong_dk == 0);
  CHECK(wrong_dq == 0);
}

}  // namespace

TEST_CASE("sm90 attention layout: the header's fragments are the PTX ISA's", "[attention]") {
  for (int t = 0; t < 128; ++t) {
    for (int i = 0; i < 128; ++i) {
      CHECK(L::acc_row(t, i) == spec_acc_row(t, i));
      CHECK(L::acc_col(t, i) == spec_acc_col(t, i));
    }
    for (int r = 0; r < 4; ++r)
      for (int h = 0; h < 2; ++h) {
        CHECK(L::a_frag_row(t, r) == spec_a_row(t, 2 * r + h));
        CHECK(L::a_frag_k(t, r, h) == spec_a_col(t, 2 * r + h));
        // The packed accumulator register is the one holding that A element (same row, column
        // 16 kk + k of the 64 x K product).
        for (int kk = 0; kk < 8; ++kk) {
          const int i = L::a_frag_acc(kk, r, h);
          CHECK(spec_acc_row(t, i) == spec_a_row(t, 2 * r + h));
          CHECK(spec_acc_col(t, i) == 16 * kk + spec_a_col(t, 2 * r + h));
        }
      }
  }
  // The accumulator order is a permutation of a part, and dq_part_find inverts it.
  std::vector<int> seen(L::kDqPart, 0);
  for (int t = 0; t < 128; ++t)
    for (int i = 0; i < 32; ++i) {
      const int at = L::dq_part_index(t, i);
      REQUIRE(at >= 0);
      REQUIRE(at < L::kDqPart);
      ++seen[static_cast<std::size_t>(at)];
      CHECK(L::dq_part_find(spec_acc_row(t, i), spec_acc_col(t, i)) == at);
    }
  for (const int x : seen)
    CHECK(x == 1);
  // The kernels' vector accesses: the part store writes registers 4 j .. 4 j + 3 as one float4,
  // the conversion reads columns (2 k, 2 k + 1) as one float2, the dK / dV epilogue stores
  // registers (i, i + 1) as one bf16 pair.
  for (int t = 0; t < 128; ++t)
    for (int i = 0; i < 32; ++i) {
      CHECK(L::dq_part_index(t, i) == L::dq_part_index(t, i & ~3) + (i & 3));
      CHECK(L::dq_part_index(t, i & ~3) % 4 == 0);
      if (i % 2 == 0) {
        CHECK(L::acc_row(t, i + 1) == L::acc_row(t, i));
        CHECK(L::acc_col(t, i + 1) == L::acc_col(t, i) + 1);
      }
    }
  for (int row = 0; row < 64; ++row)
    for (int col = 0; col < 64; col += 2) {
      CHECK(L::dq_part_find(row, col) % 2 == 0);
      CHECK(L::dq_part_find(row, col + 1) == L::dq_part_find(row, col) + 1);
    }
}

TEST_CASE("sm90 attention layout: backward tiles, descriptors, dS^T and dQ order compose",
          "[attention]") {
  emulate_backward(64);
  emulate_backward(128);
}

TEST_CASE("sm90 attention layout: the dS^T pair stores are free of bank conflicts", "[attention]") {
  // One st.shared.b32 per packed register: a warp's 32 lanes must hit 32 different banks.
  int conflicts = 0;
  for (const int hd : {64, 128}) {
    const int M = L::bwd_block_m(hd);
    for (int cw = 0; cw < 2; ++cw)
      for (int warp = 0; warp < 4; ++warp)
        for (int kk = 0; kk < M / 16; ++kk)
          for (int r = 0; r < 4; ++r) {
            unsigned long long banks = 0;
            for (int lane = 0; lane < 32; ++lane) {
              const int t = 32 * warp + lane;
              const std::uint32_t at =
                  L::ds_offset(cw * 64 + L::a_frag_row(t, r), 16 * kk + L::a_frag_k(t, r, 0));
              banks |= 1ull << ((at / 4) % 32);
            }
            conflicts += banks != 0xFFFFFFFFull;
          }
  }
  CHECK(conflicts == 0);
}
