// The CPU backend's matrix product: multi-threaded, and exact in the references' terms: every
// output element is one sequential sum over k, in ascending order, of products formed and
// accumulated in double (for float inputs each product is exact in double, so fused and unfused
// multiply-adds give the same bits). Results therefore do not depend on the thread count, the
// tiling or the instruction set, and equal a naive double-accumulating triple loop.
#pragma once

#include <cstdint>

#include "runtime/cpu/thread_pool.hpp"

namespace kiln::impl {

// A strided matrix view: element (r, c) at data[r * rs + c * cs].
template <typename T>
struct MatView {
  const T* data;
  int64_t rs, cs;
};

// C (M, N) row-major with leading dimension ldc:
//   C[m, n] = (accumulate ? C[m, n] : 0) + bias[n] + sum_k A(m, k) * B(k, n)
// with the sum in double and one rounding to T at the end (bias null: 0). `pack` is scratch of
// at least gemm_pack_elements(K) * pool.size() elements (used when B's columns are strided).
template <typename T>
void cpu_gemm(ThreadPool& pool, int64_t M, int64_t N, int64_t K, MatView<T> A, MatView<T> B, T* C,
              int64_t ldc, bool accumulate, const T* bias, T* pack);

// Scratch elements per thread for a reduction length K.
int64_t gemm_pack_elements(int64_t K);

// db[n] += sum_m dy[m, n] over dy (M, N) row-major, each column summed in double in row order.
template <typename T>
void cpu_colsum_accumulate(ThreadPool& pool, T* db, const T* dy, int64_t M, int64_t N);

}  // namespace kiln::impl
