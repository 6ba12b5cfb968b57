#include "runtime/cpu/gemm_cpu.hpp"

#include <algorithm>
#include <vector>

namespace kiln::impl {
namespace {

constexpr int64_t kMr = 4;  // rows of C per micro-tile
constexpr int64_t kNr = 8;  // columns of C per micro-tile

// One full kMr x kNr tile: acc[i][j] = sum_k A(m0 + i, k) * Bp[k * ldb + j], k ascending, each
// column j in its own vector lane (no reassociation: lane j's sum is the sequential one).
// Compiled twice (x86-64-v3 with AVX2/FMA, and the baseline) and chosen at load time; both give
// the same bits (see the header).
using v4d = double __attribute__((vector_size(32)));

template <typename T>
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void micro_tile(double* __restrict acc, const T* __restrict a, int64_t a_rs, int64_t a_cs,
                const T* __restrict bp, int64_t ldb, int64_t K) {
  static_assert(kMr == 4 && kNr == 8, "the tile below is written out for 4 x 8");
  v4d c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
  const T* a0 = a;
  const T* a1 = a + a_rs;
  const T* a2 = a + 2 * a_rs;
  const T* a3 = a + 3 * a_rs;
  for (int64_t k = 0; k < K; ++k) {
    const T* brow = bp + k * ldb;
    const v4d b0 = {static_cast<double>(brow[0]), static_cast<double>(brow[1]),
                    static_cast<double>(brow[2]), static_cast<double>(brow[3])};
    const v4d b1 = {static_cast<double>(brow[4]), static_cast<double>(brow[5]),
                    static_cast<double>(brow[6]), static_cast<double>(brow[7])};
    const int64_t ka = k * a_cs;
    const double x0 = static_cast<double>(a0[ka]), x1 = static_cast<double>(a1[ka]),
                 x2 = static_cast<double>(a2[ka]), x3 = static_cast<double>(a3[ka]);
    c00 += x0 * b0;
    c01 += x0 * b1;
    c10 += x1 * b0;
    c11 += x1 * b1;
    c20 += x2 * b0;
    c21 += x2 * b1;
    c30 += x3 * b0;
    c31 += x3 * b1;
  }
  const v4d* rows[kMr][2] = {{&c00, &c01}, {&c10, &c11}, {&c20, &c21}, {&c30, &c31}};
  for (int64_t i = 0; i < kMr; ++i) {
    for (int64_t j = 0; j < 4; ++j) {
      acc[i * kNr + j] = (*rows[i][0])[j];
      acc[i * kNr + 4 + j] = (*rows[i][1])[j];
    }
  }
}

// Any tile up to kMr x kNr (the edges), same order of operations.
template <typename T>
void edge_tile(double* acc, int64_t mr, int64_t nr, const T* a, int64_t a_rs, int64_t a_cs,
               const T* bp, int64_t ldb, int64_t K) {
  for (int64_t i = 0; i < mr; ++i) {
    for (int64_t j = 0; j < nr; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) {
        s += static_cast<double>(a[i * a_rs + k * a_cs]) * static_cast<double>(bp[k * ldb + j]);
      }
      acc[i * kNr + j] = s;
    }
  }
}

}  // namespace

int64_t gemm_pack_elements(int64_t K) {
  return K * kNr;
}

template <typename T>
void cpu_gemm(ThreadPool& pool, int64_t M, int64_t N, int64_t K, MatView<T> A, MatView<T> B, T* C,
              int64_t ldc, bool accumulate, const T* bias, T* pack) {
  if (M <= 0 || N <= 0) return;
  const int64_t row_tiles = (M + kMr - 1) / kMr;
  const int64_t col_tiles = (N + kNr - 1) / kNr;
  // Split the larger tile dimension over the threads; each thread owns whole tiles of C.
  const bool split_rows = row_tiles >= col_tiles;
  const int64_t tasks = split_rows ? row_tiles : col_tiles;
  pool.parallel_for(tasks, 1, [&](int part, int64_t begin, int64_t end) {
    T* my_pack = pack + part * gemm_pack_elements(K);
    const int64_t r0 = split_rows ? begin : 0, r1 = split_rows ? end : row_tiles;
    const int64_t c0 = split_rows ? 0 : begin, c1 = split_rows ? col_tiles : end;
    double acc[kMr * kNr];
    for (int64_t ct = c0; ct < c1; ++ct) {
      const int64_t n0 = ct * kNr, nr = std::min(kNr, N - n0);
      const T* bp;
      int64_t ldb;
      if (B.cs == 1 && nr == kNr) {
        bp = B.data + n0;
        ldb = B.rs;
      } else {
        for (int64_t k = 0; k < K; ++k) {
          for (int64_t j = 0; j < kNr; ++j) {
            my_pack[k * kNr + j] = j < nr ? B.data[k * B.rs + (n0 + j) * B.cs] : T(0);
          }
        }
        bp = my_pack;
        ldb = kNr;
      }
      for (int64_t rt = r0; rt < r1; ++rt) {
        const int64_t m0 = rt * kMr, mr = std::min(kMr, M - m0);
        const T* a = A.data + m0 * A.rs;
        if (mr == kMr && nr == kNr) {
          micro_tile<T>(acc, a, A.rs, A.cs, bp, ldb, K);
        } else {
          edge_tile<T>(acc, mr, nr, a, A.rs, A.cs, bp, ldb, K);
        }
        for (int64_t i = 0; i < mr; ++i) {
          T* c = C + (m0 + i) * ldc + n0;
          for (int64_t j = 0; j < nr; ++j) {
            double v = acc[i * kNr + j];
            if (bias) v += static_cast<double>(bias[n0 + j]);
            if (accumulate) v += static_cast<double>(c[j]);
            c[j] = static_cast<T>(v);
          }
        }
      }
    }
  });
}

template <typename T>
void cpu_colsum_accumulate(ThreadPool& pool, T* db, const T* dy, int64_t M, int64_t N) {
  constexpr int64_t kChunk = 64;
  pool.parallel_for((N + kChunk - 1) / kChunk, 1, [&](int, int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t n0 = chunk * kChunk, nc = std::min(kChunk, N - n0);
      double s[kChunk] = {};
      // Rows in order: each column's sum runs m ascending, reading dy row by row.
      for (int64_t m = 0; m < M; ++m) {
        const T* row = dy + m * N + n0;
        for (int64_t j = 0; j < nc; ++j)
          s[j] += static_cast<double>(row[j]);
      }
      for (int64_t j = 0; j < nc; ++j) {
        db[n0 + j] = static_cast<T>(static_cast<double>(db[n0 + j]) + s[j]);
      }
    }
  });
}

template void cpu_gemm<float>(ThreadPool&, int64_t, int64_t, int64_t, MatView<float>,
                              MatView<float>, float*, int64_t, bool, const float*, float*);
template void cpu_gemm<double>(ThreadPool&, int64_t, int64_t, int64_t, MatView<double>,
                               MatView<double>, double*, int64_t, bool, const double*, double*);
template void cpu_colsum_accumulate<float>(ThreadPool&, float*, const float*, int64_t, int64_t);
template void cpu_colsum_accumulate<double>(ThreadPool&, double*, const double*, int64_t, int64_t);

}  // namespace kiln::impl
