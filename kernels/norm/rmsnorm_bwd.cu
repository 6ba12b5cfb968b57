// RMSNorm backward (dx accumulating, deterministic dgamma), bf16 and fp32.
#include "kernels/norm/norm.hpp"
#include "kernels/norm/norm_launch.cuh"

namespace kiln::impl {

void rmsnorm_bwd(kiln_dtype_t dtype, void* dx, float* dgamma, const void* dy, const void* x,
                 const void* gamma, const float* rstd, std::int64_t N, std::int64_t C,
                 void* workspace, cudaStream_t stream) {
  norm::run_bwd<true>(dtype, dx, dgamma, nullptr, dy, x, gamma, nullptr, rstd, N, C, workspace,
                      stream);
}

}  // namespace kiln::impl
