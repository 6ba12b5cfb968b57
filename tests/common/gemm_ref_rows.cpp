#include "tests/common/gemm_ref_rows.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace kiln::test {

template <typename Acc>
void gemm_ref_rows(const kiln::ref::GemmRefArgs<float>& p) {
  if (p.trans_a || p.lda || p.ldc || p.ldd || p.ld_pre_gelu)
    throw std::invalid_argument(
        "gemm_ref_rows: packed A, C, D and pre_gelu only, A not transposed");
  kiln::ref::GemmRefArgs<float> q = p;
  std::vector<float> b_kn;
  if (p.trans_b) {
    // (N, K) with row stride ldb -> packed (K, N); blocked so both sides stay in cache.
    const std::int64_t ldb = p.ldb ? p.ldb : p.K, bs = 64;
    b_kn.resize(static_cast<std::size_t>(p.K * p.N));
    for (std::int64_t n0 = 0; n0 < p.N; n0 += bs)
      for (std::int64_t k0 = 0; k0 < p.K; k0 += bs)
        for (std::int64_t n = n0; n < std::min(p.N, n0 + bs); ++n)
          for (std::int64_t k = k0; k < std::min(p.K, k0 + bs); ++k)
            b_kn[k * p.N + n] = p.b[n * ldb + k];
    q.b = b_kn.data();
    q.ldb = p.N;
    q.trans_b = false;
  }
  // Rows are independent (each reads only its own rows of A, C and pre_gelu), so blocks of rows
  // run on their own threads; a few rows per thread at least, so small cases stay serial.
  const std::int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const std::int64_t work_rows =
      std::max<std::int64_t>(1, (std::int64_t{1} << 22) / std::max<std::int64_t>(1, p.N * p.K));
  const std::int64_t threads = std::clamp<std::int64_t>(p.M / work_rows, 1, cores);
  const std::int64_t per = (p.M + threads - 1) / std::max<std::int64_t>(threads, 1);
  auto block = [&q](std::int64_t r0, std::int64_t r1) {
    kiln::ref::GemmRefArgs<float> b = q;
    b.M = r1 - r0;
    b.a = q.a + r0 * q.K;
    if (q.c) b.c = q.c + r0 * q.N;
    b.d = q.d + r0 * q.N;
    if (q.pre_gelu_out) b.pre_gelu_out = q.pre_gelu_out + r0 * q.N;
    if (q.pre_gelu) b.pre_gelu = q.pre_gelu + r0 * q.N;
    if (q.bias_grad) b.bias_grad = q.bias_grad + r0;
    kiln::ref::gemm_ref<float, Acc>(b);
  };
  if (threads <= 1 || p.M <= 1) {
    if (p.M > 0) block(0, p.M);
    return;
  }
  std::vector<std::thread> pool;
  for (std::int64_t r0 = 0; r0 < p.M; r0 += per)
    pool.emplace_back(block, r0, std::min(p.M, r0 + per));
  for (auto& t : pool)
    t.join();
}

template void gemm_ref_rows<double>(const kiln::ref::GemmRefArgs<float>&);
template void gemm_ref_rows<float>(const kiln::ref::GemmRefArgs<float>&);

}  // namespace kiln::test
