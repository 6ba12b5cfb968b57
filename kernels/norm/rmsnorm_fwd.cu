// RMSNorm forward and the fused residual-add + RMSNorm forward, bf16 and fp32 (the LayerNorm
// kernels with the centring and beta compiled out).
#include "kernels/norm/norm.hpp"
#include "kernels/norm/norm_launch.cuh"

namespace kiln::impl {

void rmsnorm_fwd(kiln_dtype_t dtype, void* y, float* rstd, const void* x, const void* gamma,
                 std::int64_t N, std::int64_t C, float eps, cudaStream_t stream) {
  norm::run_fwd<true>(dtype, nullptr, y, nullptr, rstd, x, nullptr, gamma, nullptr, N, C, eps,
                      stream);
}

void residual_rmsnorm_fwd(kiln_dtype_t dtype, void* residual, void* y, float* rstd, const void* a,
                          const void* b, const void* gamma, std::int64_t N, std::int64_t C,
                          float eps, cudaStream_t stream) {
  norm::run_fwd<true>(dtype, residual, y, nullptr, rstd, a, b, gamma, nullptr, N, C, eps, stream);
}

}  // namespace kiln::impl
