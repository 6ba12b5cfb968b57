// LayerNorm backward (dx accumulating, deterministic dgamma / dbeta), bf16 and fp32.
#include "kernels/norm/norm.hpp"
#include "kernels/norm/norm_launch.cuh"

namespace kiln::impl {

void layernorm_bwd(kiln_dtype_t dtype, void* dx, float* dgamma, float* dbeta, const void* dy,
                   const void* x, const void* gamma, const float* mean, const float* rstd,
                   std::int64_t N, std::int64_t C, void* workspace, cudaStream_t stream) {
  norm::run_bwd<false>(dtype, dx, dgamma, dbeta, dy, x, gamma, mean, rstd, N, C, workspace, stream);
}

}  // namespace kiln::impl
