// The GEMM reference as the GPU tests call it, made cheap on the host: a transposed B is copied
// into (K, N) order first (the reference's inner loop walks B along n, which for a transposed B
// strides by ldb: 0.13 GMAC/s on GPT-2's lm head), and the rows are split over every core. Each
// output row is computed exactly as kiln::ref::gemm_ref computes it, so the results are bitwise
// those of the plain reference (tests/cpu/gemm_ref_rows_test.cpp).
#pragma once

#include "kernels/gemm/gemm_ref.hpp"

namespace kiln::test {

// gemm_ref<float, Acc>(p) for Acc double or float. p.trans_a must be false (the tests gather
// the sampled rows of op(A) into a packed (M, K) matrix first); every leading dimension of A, C,
// D and pre_gelu must be the packed one (0).
template <typename Acc>
void gemm_ref_rows(const kiln::ref::GemmRefArgs<float>& p);

}  // namespace kiln::test
