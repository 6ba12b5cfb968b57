// The internal launchers of LayerNorm and RMSNorm (one set of kernels, norm_kernels.cuh) and the
// backward's workspace rule. Arguments are checked by the C ABI (norm.cpp) before these are
// called.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kiln/core.h"

namespace kiln::impl {

// The backward's dgamma / dbeta partials: one fp32 row of `arrays` x C per block, at most
// kNormMaxPartials blocks, and at least kNormMinRowsPerPartial rows per block so that the
// partials stay small next to the rows themselves.
constexpr std::int64_t kNormMaxPartials = 1024;
constexpr std::int64_t kNormMinRowsPerPartial = 16;

// Partial rows the workspace holds: min(ceil(N / kNormMinRowsPerPartial), kNormMaxPartials).
constexpr std::int64_t norm_partials_cap(std::int64_t N) {
  const std::int64_t p = (N + kNormMinRowsPerPartial - 1) / kNormMinRowsPerPartial;
  return p < kNormMaxPartials ? p : kNormMaxPartials;
}
// The partials' row stride in floats: C rounded up to 16 bytes.
constexpr std::int64_t norm_partials_stride(std::int64_t C) {
  return (C + 3) / 4 * 4;
}
// Workspace bytes of a backward with `arrays` parameter gradients (2: LayerNorm, 1: RMSNorm).
constexpr std::size_t norm_bwd_workspace_bytes(int arrays, std::int64_t N, std::int64_t C) {
  return static_cast<std::size_t>(norm_partials_cap(N) * arrays * norm_partials_stride(C)) *
         sizeof(float);
}

// LayerNorm (layernorm_fwd.cu, layernorm_bwd.cu).
void layernorm_fwd(kiln_dtype_t dtype, void* y, float* mean, float* rstd, const void* x,
                   const void* gamma, const void* beta, std::int64_t N, std::int64_t C, float eps,
                   cudaStream_t stream);
void residual_layernorm_fwd(kiln_dtype_t dtype, void* residual, void* y, float* mean, float* rstd,
                            const void* a, const void* b, const void* gamma, const void* beta,
                            std::int64_t N, std::int64_t C, float eps, cudaStream_t stream);
void layernorm_bwd(kiln_dtype_t dtype, void* dx, float* dgamma, float* dbeta, const void* dy,
                   const void* x, const void* gamma, const float* mean, const float* rstd,
                   std::int64_t N, std::int64_t C, void* workspace, cudaStream_t stream);

// RMSNorm (rmsnorm_fwd.cu, rmsnorm_bwd.cu): the same kernels with the centring and beta compiled
// out; its backward's workspace is norm_bwd_workspace_bytes(1, N, C).
void rmsnorm_fwd(kiln_dtype_t dtype, void* y, float* rstd, const void* x, const void* gamma,
                 std::int64_t N, std::int64_t C, float eps, cudaStream_t stream);
void residual_rmsnorm_fwd(kiln_dtype_t dtype, void* residual, void* y, float* rstd, const void* a,
                          const void* b, const void* gamma, std::int64_t N, std::int64_t C,
                          float eps, cudaStream_t stream);
void rmsnorm_bwd(kiln_dtype_t dtype, void* dx, float* dgamma, const void* dy, const void* x,
                 const void* gamma, const float* rstd, std::int64_t N, std::int64_t C,
                 void* workspace, cudaStream_t stream);

}  // namespace kiln::impl
