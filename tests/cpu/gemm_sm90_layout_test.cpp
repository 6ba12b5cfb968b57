// The sm_90a GEMM's index math (kernels/gemm/gemm_sm90_layout.hpp) emulated on the CPU: TMA
// writes each box into a stage with the 128-byte swizzle, wgmma reads its operands through the
// descriptors the kernel builds (start, LBO, SBO, M/N-major flag) as the PTX ISA's canonical
// layouts define them, the accumulators land in registers by the documented fragment layout, and
// the epilogue writes them through its swizzled buffer into D as the TMA store would. The result
// must be the exact GEMM (small integers: every sum is exact), for every operand layout and both
// tile widths, on shapes that are no tile multiple. The bias gradient's shared-memory reads must
// cover each row's 64 k of a stage exactly once.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm/gemm_sm90_layout.hpp"

namespace sm90 = kiln::dev::sm90;

namespace {

// Shared memory as bytes, holding small integers as floats (the emulation needs only values).
struct Smem {
  std::vector<float> v;  // one float per 2-byte bf16 slot
  explicit Smem(std::size_t bytes) : v(bytes / 2, 0.0f) {}
  float& at(std::uint32_t byte) {
    if (byte % 2 != 0 || byte / 2 >= v.size())  // not REQUIRE: this runs millions of times
      throw std::out_of_range("shared memory byte " + std::to_string(byte) + " out of the tile");
    return v[byte / 2];
  }
};

// TMA with SWIZZLE_128B: box element (inner i, outer o) goes to row o, byte 2 i, swizzled by the
// address bits 7-9 (the row, for a 1024-aligned box).
void tma_load(Smem& s, std::uint32_t dst, const sm90::Box& box, const std::vector<float>& g,
              std::int64_t inner_extent, std::int64_t outer_extent, std::int64_t ld) {
  REQUIRE(dst % 1024 == 0);
  for (int o = 0; o < box.rows; ++o)
    for (int i = 0; i < 64; ++i) {
      const std::int64_t gi = box.c0 + i, go = box.c1 + o;
      const float v = (gi < inner_extent && go < outer_extent) ? g[go * ld + gi] : 0.0f;
      s.at(dst + sm90::sw128(o, 2 * i)) = v;
    }
}

// wgmma's view of a 128-byte-swizzled operand (PTX ISA "Shared Memory Matrix Layout"; CUTLASS
// make_gmma_desc): element (mn, k), k < 16, of the matrix whose descriptor starts at `start`:
//   K-major:   start + (mn % 8) * 128 + (mn / 8) * SBO + 2 k
//   M/N-major: start + 2 (mn % 64) + (mn / 64) * LBO + (k % 8) * 128 + (k / 8) * SBO
// then bits 4-6 of the address XOR bits 7-9.
float wgmma_read(Smem& s, std::uint32_t start, std::uint32_t lbo, std::uint32_t sbo, bool mn_major,
                 int mn, int k) {
  std::uint32_t a = mn_major
                        ? start + 2 * (mn % 64) + (mn / 64) * lbo + (k % 8) * 128 + (k / 8) * sbo
                        : start + (mn % 8) * 128 + (mn / 8) * sbo + 2 * k;
  a ^= ((a >> 7) & 7) << 4;
  return s.at(a);
}

std::vector<float> small_ints(std::size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(-3, 3);
  std::vector<float> v(n);
  for (auto& x : v)
    x = static_cast<float>(d(rng));
  return v;
}

void emulate(bool ta, bool tb, int bn, int out_bytes, std::int64_t M, std::int64_t N,
             std::int64_t K) {
  std::mt19937 rng(static_cast<unsigned>(M * 7 + N * 3 + K + ta * 100 + tb * 200 + bn));
  const std::int64_t lda = (ta ? M : K) + 8, ldb = (tb ? K : N) + 8;
  const auto A = small_ints((ta ? K : M) * lda, rng);
  const auto B = small_ints((tb ? N : K) * ldb, rng);
  const std::uint32_t a_bytes = sm90::kBM * sm90::kBK * 2, b_bytes = bn * sm90::kBK * 2;
  const int tiles_m = static_cast<int>((M + sm90::kBM - 1) / sm90::kBM);
  const int tiles_n = static_cast<int>((N + bn - 1) / bn);
  const int k_blocks = static_cast<int>((K + sm90::kBK - 1) / sm90::kBK);
  const int regs = bn / 2;
  std::vector<float> D(M * N, 0.0f);
  std::vector<int> written(M * N, 0);

  for (int tm = 0; tm < tiles_m; ++tm)
    for (int tn = 0; tn < tiles_n; ++tn) {
      // acc[cw][t][i]: register i of thread t of consumer warpgroup cw.
      std::vector<float> acc(2 * 128 * regs, 0.0f);
      for (int kb = 0; kb < k_blocks; ++kb) {
        Smem s(a_bytes + b_bytes);
        for (int i = 0; i < sm90::a_box_count(ta); ++i) {
          const sm90::Box box = sm90::a_box(ta, i, tm, kb);
          tma_load(s, box.smem, box, A, ta ? M : K, ta ? K : M, lda);
        }
        for (int i = 0; i < sm90::b_box_count(tb, bn); ++i) {
          const sm90::Box box = sm90::b_box(tb, i, tn, kb, bn);
          tma_load(s, a_bytes + box.smem, box, B, tb ? K : N, tb ? N : K, ldb);
        }
        for (int cw = 0; cw < 2; ++cw)
          for (int ks = 0; ks < sm90::kBK / 16; ++ks) {
            // The 64 x bn product of this k step, as wgmma reads its operands.
            std::vector<float> prod(64 * bn, 0.0f);
            for (int m = 0; m < 64; ++m)
              for (int n = 0; n < bn; ++n) {
                float sum = 0;
                for (int k = 0; k < 16; ++k)
                  sum += wgmma_read(s, sm90::a_desc_start(ta, cw, ks), sm90::a_lbo(ta), sm90::kSbo,
                                    sm90::a_mn_major(ta), m, k) *
                         wgmma_read(s, a_bytes + sm90::b_desc_start(tb, ks), sm90::b_lbo(tb),
                                    sm90::kSbo, sm90::b_mn_major(tb), n, k);
                prod[m * bn + n] = sum;
              }
            for (int t = 0; t < 128; ++t)
              for (int i = 0; i < regs; ++i)
                acc[(cw * 128 + t) * regs + i] +=
                    prod[sm90::acc_row(t, i) * bn + sm90::acc_col(t, i)];
          }
      }
      // Epilogue: each 128-byte chunk of columns through the swizzled buffer, then the TMA
      // store's view of it (row r, byte b at sw128(r, b)), clipped to the matrix.
      const int chunk = 128 / out_bytes;  // columns per 128-byte row of the buffer
      for (int cw = 0; cw < 2; ++cw)
        for (int q = 0; q < bn / chunk; ++q) {
          Smem buf(64 * 128);
          for (int t = 0; t < 128; ++t)
            for (int i = 0; i < regs; ++i) {
              const int col = sm90::acc_col(t, i);
              if (col / chunk != q) continue;
              buf.at(sm90::sw128(sm90::acc_row(t, i), out_bytes * (col - chunk * q))) =
                  acc[(cw * 128 + t) * regs + i];
            }
          for (int r = 0; r < 64; ++r)
            for (int c = 0; c < chunk; ++c) {
              const std::int64_t row = std::int64_t{tm} * sm90::kBM + cw * 64 + r;
              const std::int64_t col = std::int64_t{tn} * bn + chunk * q + c;
              if (row >= M || col >= N) continue;
              D[row * N + col] = buf.at(sm90::sw128(r, out_bytes * c));
              ++written[row * N + col];
            }
        }
    }

  std::size_t wrong = 0, rewritten = 0;
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      float want = 0;
      for (std::int64_t k = 0; k < K; ++k)
        want += (ta ? A[k * lda + m] : A[m * lda + k]) * (tb ? B[n * ldb + k] : B[k * ldb + n]);
      wrong += D[m * N + n] != want;
      rewritten += written[m * N + n] != 1;
    }
  INFO("trans_a " << ta << " trans_b " << tb << " BN " << bn << " output bytes " << out_bytes
                  << " M " << M << " N " << N << " K " << K << ": " << wrong << " wrong elements, "
                  << rewritten << " written other than once");
  CHECK(wrong == 0);
  CHECK(rewritten == 0);
}

}  // namespace

TEST_CASE("sm90 GEMM layout: TMA boxes, wgmma descriptors and the epilogue compose into the GEMM",
          "[gemm_sm90_layout]") {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int bn : {128, 256})
        for (int out_bytes : {2, 4})
          emulate(ta, tb, bn, out_bytes, 200, bn + 72, 150);
}

TEST_CASE(
    "sm90 GEMM layout: the epilogue's bf16 pair stores into the swizzled buffer are free "
    "of bank conflicts",
    "[gemm_sm90_layout]") {
  // One st.shared.b32 per accumulator pair: the 32 lanes of a warp must hit 32 different banks.
  int conflicts = 0;
  for (int warp = 0; warp < 4; ++warp)
    for (int i = 0; i < 128; i += 2) {
      unsigned long long banks = 0;
      for (int lane = 0; lane < 32; ++lane) {
        const int t = 32 * warp + lane, col = sm90::acc_col(t, i);
        const std::uint32_t at = sm90::sw128(sm90::acc_row(t, i), 2 * (col % 64));
        banks |= 1ull << ((at / 4) % 32);
      }
      conflicts += banks != 0xFFFFFFFFull;
    }
  CHECK(conflicts == 0);
}

TEST_CASE("sm90 GEMM layout: the bias gradient's reads cover each row's k exactly once",
          "[gemm_sm90_layout]") {
  for (int ta = 0; ta < 2; ++ta) {
    // Stage slice of 64 rows of op(A): fill element (m, k) with a unique id as TMA lays it out.
    Smem s(sm90::kBoxBytes);
    for (int o = 0; o < 64; ++o)
      for (int i = 0; i < 64; ++i) {
        const int m = ta ? i : o, k = ta ? o : i;
        s.at(sm90::sw128(o, 2 * i)) = static_cast<float>(m * 64 + k);
      }
    std::vector<int> seen(64 * 64, 0);
    for (int t = 0; t < 128; ++t)
      for (int r = 0; r < 4; ++r) {
        const std::uint32_t at = sm90::row_sums_read(ta, t, r);
        REQUIRE(at % 16 == 0);
        for (int e = 0; e < 8; ++e) {
          const int id = static_cast<int>(s.at(at + 2 * e));
          // The row the kernel credits element e of this read to.
          const int row = ta ? 8 * (t % 8) + e : t / 2;
          CHECK(id / 64 == row);
          ++seen[id];
        }
      }
    for (int id = 0; id < 64 * 64; ++id)
      REQUIRE(seen[id] == 1);
  }
}
