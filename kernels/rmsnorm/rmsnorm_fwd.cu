// RMSNorm forward, bf16 and fp32 (the LayerNorm kernels with the centring and beta compiled out).
#include <cuda_bf16.h>

#include "kernels/layernorm/norm_launch.cuh"
#include "kernels/rmsnorm/rmsnorm.hpp"

namespace kiln::impl {

namespace {

template <typename T>
void fwd(void* y, float* rstd, const void* x, const void* gamma, std::int64_t N, std::int64_t C,
         float eps, cudaStream_t stream) {
  norm::FwdParams<T> p{};
  p.y = static_cast<T*>(y);
  p.rstd = rstd;
  p.x = static_cast<const T*>(x);
  p.gamma = static_cast<const T*>(gamma);
  p.N = N;
  p.C = static_cast<int>(C);
  p.eps = eps;
  norm::launch_fwd<T, true, false>(p, stream);
}

}  // namespace

void rmsnorm_fwd(kiln_dtype_t dtype, void* y, float* rstd, const void* x, const void* gamma,
                 std::int64_t N, std::int64_t C, float eps, cudaStream_t stream) {
  if (dtype == KILN_DTYPE_BF16) {
    fwd<__nv_bfloat16>(y, rstd, x, gamma, N, C, eps, stream);
  } else {
    fwd<float>(y, rstd, x, gamma, N, C, eps, stream);
  }
}

}  // namespace kiln::impl
