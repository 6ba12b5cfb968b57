// LayerNorm backward (dx accumulating, deterministic dgamma / dbeta), bf16 and fp32.
#include <cuda_bf16.h>

#include "kernels/layernorm/layernorm.hpp"
#include "kernels/layernorm/norm_launch.cuh"

namespace kiln::impl {

namespace {

template <typename T>
void bwd(void* dx, float* dgamma, float* dbeta, const void* dy, const void* x, const void* gamma,
         const float* mean, const float* rstd, std::int64_t N, std::int64_t C, void* workspace,
         cudaStream_t stream) {
  norm::BwdParams<T> p{};
  p.dx = static_cast<T*>(dx);
  p.partials = static_cast<float*>(workspace);
  p.dy = static_cast<const T*>(dy);
  p.x = static_cast<const T*>(x);
  p.gamma = static_cast<const T*>(gamma);
  p.mean = mean;
  p.rstd = rstd;
  p.N = N;
  p.C = static_cast<int>(C);
  p.c_pad = static_cast<int>(norm_partials_stride(C));
  norm::launch_bwd<T, false>(p, dgamma, dbeta, stream);
}

}  // namespace

void layernorm_bwd(kiln_dtype_t dtype, void* dx, float* dgamma, float* dbeta, const void* dy,
                   const void* x, const void* gamma, const float* mean, const float* rstd,
                   std::int64_t N, std::int64_t C, void* workspace, cudaStream_t stream) {
  if (dtype == KILN_DTYPE_BF16) {
    bwd<__nv_bfloat16>(dx, dgamma, dbeta, dy, x, gamma, mean, rstd, N, C, workspace, stream);
  } else {
    bwd<float>(dx, dgamma, dbeta, dy, x, gamma, mean, rstd, N, C, workspace, stream);
  }
}

}  // namespace kiln::impl
