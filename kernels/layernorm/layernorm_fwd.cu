// LayerNorm forward and the fused residual-add + LayerNorm forward, bf16 and fp32.
#include <cuda_bf16.h>

#include "kernels/layernorm/layernorm.hpp"
#include "kernels/layernorm/norm_launch.cuh"

namespace kiln::impl {

namespace {

template <typename T>
void fwd(bool residual_variant, void* residual, void* y, float* mean, float* rstd, const void* a,
         const void* b, const void* gamma, const void* beta, std::int64_t N, std::int64_t C,
         float eps, cudaStream_t stream) {
  norm::FwdParams<T> p{};
  p.y = static_cast<T*>(y);
  p.mean = mean;
  p.rstd = rstd;
  p.residual = static_cast<T*>(residual);
  p.x = static_cast<const T*>(a);
  p.b = static_cast<const T*>(b);
  p.gamma = static_cast<const T*>(gamma);
  p.beta = static_cast<const T*>(beta);
  p.N = N;
  p.C = static_cast<int>(C);
  p.eps = eps;
  if (residual_variant) {
    norm::launch_fwd<T, false, true>(p, stream);
  } else {
    norm::launch_fwd<T, false, false>(p, stream);
  }
}

}  // namespace

void layernorm_fwd(kiln_dtype_t dtype, void* y, float* mean, float* rstd, const void* x,
                   const void* gamma, const void* beta, std::int64_t N, std::int64_t C, float eps,
                   cudaStream_t stream) {
  if (dtype == KILN_DTYPE_BF16) {
    fwd<__nv_bfloat16>(false, nullptr, y, mean, rstd, x, nullptr, gamma, beta, N, C, eps, stream);
  } else {
    fwd<float>(false, nullptr, y, mean, rstd, x, nullptr, gamma, beta, N, C, eps, stream);
  }
}

void residual_layernorm_fwd(kiln_dtype_t dtype, void* residual, void* y, float* mean, float* rstd,
                            const void* a, const void* b, const void* gamma, const void* beta,
                            std::int64_t N, std::int64_t C, float eps, cudaStream_t stream) {
  if (dtype == KILN_DTYPE_BF16) {
    fwd<__nv_bfloat16>(true, residual, y, mean, rstd, a, b, gamma, beta, N, C, eps, stream);
  } else {
    fwd<float>(true, residual, y, mean, rstd, a, b, gamma, beta, N, C, eps, stream);
  }
}

}  // namespace kiln::impl
