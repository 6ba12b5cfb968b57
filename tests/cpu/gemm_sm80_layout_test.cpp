// The sm_80 GEMM's index math (kernels/gemm/gemm_sm80_layout.hpp) emulated on the CPU: cp.async
// fills the swizzled tiles (zero-filling past the matrix), ldmatrix (.x4, plain and .trans)
// gathers fragments from the row addresses each lane supplies, mma.m16n8k16 multiplies them by
// the PTX ISA's fragment layouts, and the epilogue places the accumulators in D. The result must
// be the exact GEMM (small integers), with the bias gradient's row sums, for every layout, on a
// shape that is no tile multiple; and no ldmatrix may hit a shared-memory bank conflict.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm/gemm_sm80_layout.hpp"

namespace sm80 = kiln::dev::sm80;

namespace {

struct Tile {
  std::vector<float> v = std::vector<float>(sm80::kTileBytes / 2, 0.0f);  // one per bf16 slot
  float& at(std::uint32_t byte) {
    if (byte % 2 != 0 || byte / 2 >= v.size())
      throw std::out_of_range("tile byte " + std::to_string(byte));
    return v[byte / 2];
  }
};

// ldmatrix.x4: lanes 8 q .. 8 q + 7 give the row addresses of matrix q; lane l receives, per
// matrix, elements (l / 4, 2 (l % 4) + {0, 1}), or with .trans those of the transposed matrix,
// i.e. rows 2 (l % 4) + {0, 1} of column l / 4.
// Each matrix's 8 rows of 16 bytes are read in one shared-memory wavefront only if they fall in
// 8 different 16-byte bank groups (address / 16 mod 8): count the matrices that do not.
int g_bank_conflicts = 0;
using Frag = std::array<std::array<float, 8>, 32>;  // [lane][register * 2 + half]
Frag ldmatrix_x4(Tile& t, const std::array<std::uint32_t, 32>& addr, bool trans) {
  Frag f{};
  for (int q = 0; q < 4; ++q) {
    unsigned groups = 0;
    for (int r = 0; r < 8; ++r)
      groups |= 1u << ((addr[8 * q + r] / 16) % 8);
    g_bank_conflicts += groups != 0xFFu;
  }
  for (int q = 0; q < 4; ++q)
    for (int l = 0; l < 32; ++l)
      for (int h = 0; h < 2; ++h) {
        const int r = trans ? 2 * (l % 4) + h : l / 4;
        const int c = trans ? l / 4 : 2 * (l % 4) + h;
        f[l][2 * q + h] = t.at(addr[8 * q + r] + 2 * c);
      }
  return f;
}

// mma.m16n8k16 (row.col): a[l] = registers a0..a3 of lane l, b[l] = b0, b1; returns the 16 x 8
// product C[row][col] (PTX ISA "Matrix Fragments for mma.m16n8k16").
std::array<std::array<float, 8>, 16> mma(const std::array<std::array<float, 8>, 32>& a,
                                         const std::array<std::array<float, 4>, 32>& b) {
  float A[16][16] = {}, B[16][8] = {};
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = a[l][0 + h];
      A[g + 8][2 * t + h] = a[l][2 + h];
      A[g][2 * t + 8 + h] = a[l][4 + h];
      A[g + 8][2 * t + 8 + h] = a[l][6 + h];
      B[2 * t + h][g] = b[l][0 + h];
      B[2 * t + 8 + h][g] = b[l][2 + h];
    }
  }
  std::array<std::array<float, 8>, 16> C{};
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j)
      for (int k = 0; k < 16; ++k)
        C[i][j] += A[i][k] * B[k][j];
  return C;
}

void emulate(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K) {
  std::mt19937 rng(static_cast<unsigned>(M + 31 * N + 7 * K + ta + 2 * tb));
  std::uniform_int_distribution<int> d(-3, 3);
  const std::int64_t lda = (ta ? M : K) + 8, ldb = (tb ? K : N) + 8;
  std::vector<float> A((ta ? K : M) * lda), B((tb ? N : K) * ldb);
  for (auto& x : A)
    x = static_cast<float>(d(rng));
  for (auto& x : B)
    x = static_cast<float>(d(rng));
  std::vector<float> D(M * N, 0.0f), sums(M, 0.0f);
  std::vector<int> written(M * N, 0), sum_written(M, 0);

  // cp.async of one tile: copy i of thread tid moves 8 elements (16 bytes) of one row, the part
  // past the row's end zero-filled.
  auto fill = [](Tile& t, bool mn, const std::vector<float>& g, std::int64_t ld,
                 std::int64_t rows_total, std::int64_t cols_total, std::int64_t r0,
                 std::int64_t c0) {
    for (int tid = 0; tid < sm80::kThreads; ++tid)
      for (int i = 0; i < 2; ++i) {
        const sm80::RowChunk rc = mn ? sm80::mn_tile_copy(tid, i) : sm80::k_tile_copy(tid, i);
        const std::uint32_t at =
            mn ? sm80::mn_tile_chunk(rc.row, rc.chunk) : sm80::k_tile_chunk(rc.row, rc.chunk);
        for (int e = 0; e < 8; ++e) {
          const std::int64_t r = r0 + rc.row, c = c0 + rc.chunk * 8 + e;
          t.at(at + 2 * e) = (r < rows_total && c < cols_total) ? g[r * ld + c] : 0.0f;
        }
      }
  };

  const int tiles_m = static_cast<int>((M + sm80::kBM - 1) / sm80::kBM);
  const int tiles_n = static_cast<int>((N + sm80::kBN - 1) / sm80::kBN);
  for (int tm = 0; tm < tiles_m; ++tm)
    for (int tn = 0; tn < tiles_n; ++tn) {
      const std::int64_t m0 = std::int64_t{tm} * sm80::kBM, n0 = std::int64_t{tn} * sm80::kBN;
      // acc[warp][lane][i][j][v] and the row sums' [warp][lane][i][v]
      std::vector<float> acc(8 * 32 * 4 * 4 * 4, 0.0f), rs(8 * 32 * 4 * 4, 0.0f);
      for (std::int64_t k0 = 0; k0 < K; k0 += sm80::kBK) {
        Tile at, bt;
        if (ta)
          fill(at, true, A, lda, K, M, k0, m0);
        else
          fill(at, false, A, lda, M, K, m0, k0);
        if (tb)
          fill(bt, false, B, ldb, N, K, n0, k0);
        else
          fill(bt, true, B, ldb, K, N, k0, n0);
        for (int warp = 0; warp < 8; ++warp)
          for (int kk = 0; kk < sm80::kBK; kk += 16) {
            const int wr = sm80::warp_row0(warp), wc = sm80::warp_col0(warp);
            std::array<Frag, 2> bf;
            for (int j = 0; j < 2; ++j) {
              std::array<std::uint32_t, 32> addr;
              for (int l = 0; l < 32; ++l)
                addr[l] = sm80::b_frag_addr(!tb, l, wc + 16 * j, kk);
              bf[j] = ldmatrix_x4(bt, addr, !tb);
            }
            for (int i = 0; i < 4; ++i) {
              std::array<std::uint32_t, 32> addr;
              for (int l = 0; l < 32; ++l)
                addr[l] = sm80::a_frag_addr(ta, l, wr + 16 * i, kk);
              const Frag af = ldmatrix_x4(at, addr, ta);
              for (int j = 0; j < 4; ++j) {
                std::array<std::array<float, 4>, 32> b2, ones;
                for (int l = 0; l < 32; ++l)
                  for (int h = 0; h < 4; ++h) {
                    b2[l][h] = bf[j / 2][l][(j % 2) * 4 + h];
                    ones[l][h] = 1.0f;
                  }
                const auto C = mma(af, b2);
                const auto S = mma(af, ones);
                for (int l = 0; l < 32; ++l)
                  for (int v = 0; v < 4; ++v) {
                    const int r = sm80::acc_row(l, 0, v), c = sm80::acc_col(l, 0, v);
                    acc[(((warp * 32 + l) * 4 + i) * 4 + j) * 4 + v] += C[r][c];
                    if (j == 0) rs[((warp * 32 + l) * 4 + i) * 4 + v] += S[r][c];
                  }
              }
            }
          }
      }
      for (int warp = 0; warp < 8; ++warp)
        for (int l = 0; l < 32; ++l)
          for (int i = 0; i < 4; ++i)
            for (int v = 0; v < 4; ++v) {
              const std::int64_t row = m0 + sm80::warp_row0(warp) + sm80::acc_row(l, i, v);
              if (row >= M) continue;
              for (int j = 0; j < 4; ++j) {
                const std::int64_t col = n0 + sm80::warp_col0(warp) + sm80::acc_col(l, j, v);
                if (col >= N) continue;
                D[row * N + col] = acc[(((warp * 32 + l) * 4 + i) * 4 + j) * 4 + v];
                ++written[row * N + col];
              }
              // The kernel's bias-gradient writers: warps of the first column block, lanes
              // holding column 0.
              if (tn == 0 && sm80::warp_col0(warp) == 0 && sm80::acc_col(l, 0, v) == 0) {
                sums[row] = rs[((warp * 32 + l) * 4 + i) * 4 + v];
                ++sum_written[row];
              }
            }
    }

  std::size_t wrong = 0, rewritten = 0, wrong_sums = 0;
  for (std::int64_t m = 0; m < M; ++m) {
    float s = 0;
    for (std::int64_t k = 0; k < K; ++k)
      s += ta ? A[k * lda + m] : A[m * lda + k];
    wrong_sums += sum_written[m] != 1 || sums[m] != s;
    for (std::int64_t n = 0; n < N; ++n) {
      float want = 0;
      for (std::int64_t k = 0; k < K; ++k)
        want += (ta ? A[k * lda + m] : A[m * lda + k]) * (tb ? B[n * ldb + k] : B[k * ldb + n]);
      wrong += D[m * N + n] != want;
      rewritten += written[m * N + n] != 1;
    }
  }
  INFO("trans_a " << ta << " trans_b " << tb << ": " << g_bank_conflicts
                  << " ldmatrix reads with bank conflicts");
  CHECK(g_bank_conflicts == 0);
  g_bank_conflicts = 0;
  INFO("trans_a " << ta << " trans_b " << tb << ": " << wrong << " wrong, " << rewritten
                  << " written other than once, " << wrong_sums << " wrong row sums");
  CHECK(wrong == 0);
  CHECK(rewritten == 0);
  CHECK(wrong_sums == 0);
}

}  // namespace

TEST_CASE(
    "sm80 GEMM layout: cp.async tiles, ldmatrix fragments and the epilogue compose into "
    "the GEMM",
    "[gemm_sm80_layout]") {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      emulate(ta, tb, 150, 200, 70);
}
