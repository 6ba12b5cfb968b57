// LayerNorm forward and the fused residual-add + LayerNorm forward, bf16 and fp32.
#include "kernels/norm/norm.hpp"
#include "kernels/norm/norm_launch.cuh"

namespace kiln::impl {

void layernorm_fwd(kiln_dtype_t dtype, void* y, float* mean, float* rstd, const void* x,
                   const void* gamma, const void* beta, std::int64_t N, std::int64_t C, float eps,
                   cudaStream_t stream) {
  norm::run_fwd<false>(dtype, nullptr, y, mean, rstd, x, nullptr, gamma, beta, N, C, eps, stream);
}

void residual_layernorm_fwd(kiln_dtype_t dtype, void* residual, void* y, float* mean, float* rstd,
                            const void* a, const void* b, const void* gamma, const void* beta,
                            std::int64_t N, std::int64_t C, float eps, cudaStream_t stream) {
  norm::run_fwd<false>(dtype, residual, y, mean, rstd, a, b, gamma, beta, N, C, eps, stream);
}

}  // namespace kiln::impl
