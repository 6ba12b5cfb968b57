// RMSNorm forward and the fused residual-add + RMSNorm forward, bf16 and fp32 (the LayerNorm
// kernels with the centring and beta compiled out).
#include <cuda_bf16.h>

#include "kernels/layernorm/norm_launch.cuh"
#include "kernels/rmsnorm/rmsnorm.hpp"

namespace kiln::impl {

namespace {

// residual_variant: residual = a + b, y = RMSNorm(residual); else y = RMSNorm(a).
template <typename T>
void fwd(bool residual_variant, void* residual, void* y, float* rstd, const void* a, const void* b,
         const void* gamma, std::int64_t N, std::int64_t C, float eps, cudaStream_t stream) {
  norm::FwdParams<T> p{};
  p.y = static_cast<T*>(y);
  p.rstd = rstd;
  p.residual = static_cast<T*>(residual);
  p.x = static_cast<const T*>(a);
  p.b = static_cast<const T*>(b);
  p.gamma = static_cast<const T*>(gamma);
  p.N = N;
  p.C = static_cast<int>(C);
  p.eps = eps;
  if (residual_variant) {
    norm::launch_fwd<T, true, true>(p, stream);
  } else {
    norm::launch_fwd<T, true, false>(p, stream);
  }
}

}  // namespace

void rmsnorm_fwd(kiln_dtype_t dtype, void* y, float* rstd, const void* x, const void* gamma,
                 std::int64_t N, std::int64_t C, float eps, cudaStream_t stream) {
  if (dtype == KILN_DTYPE_BF16) {
    fwd<__nv_bfloat16>(false, nullptr, y, rstd, x, nullptr, gamma, N, C, eps, stream);
  } else {
    fwd<float>(false, nullptr, y, rstd, x, nullptr, gamma, N, C, eps, stream);
  }
}

void residual_rmsnorm_fwd(kiln_dtype_t dtype, void* residual, void* y, float* rstd, const void* a,
                          const void* b, const void* gamma, std::int64_t N, std::int64_t C,
                          float eps, cudaStream_t stream) {
  if (dtype == KILN_DTYPE_BF16) {
    fwd<__nv_bfloat16>(true, residual, y, rstd, a, b, gamma, N, C, eps, stream);
  } else {
    fwd<float>(true, residual, y, rstd, a, b, gamma, N, C, eps, stream);
  }
}

}  // namespace kiln::impl
