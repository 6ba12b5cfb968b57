// RMSNorm's internal launchers. Arguments are checked by the C ABI (rmsnorm.cpp) before these
// are called. The backward's workspace follows LayerNorm's rule with one parameter gradient
// (kernels/layernorm/layernorm.hpp: norm_bwd_workspace_bytes(1, N, C)).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kiln/core.h"

namespace kiln::impl {

void rmsnorm_fwd(kiln_dtype_t dtype, void* y, float* rstd, const void* x, const void* gamma,
                 std::int64_t N, std::int64_t C, float eps, cudaStream_t stream);
void residual_rmsnorm_fwd(kiln_dtype_t dtype, void* residual, void* y, float* rstd, const void* a,
                          const void* b, const void* gamma, std::int64_t N, std::int64_t C,
                          float eps, cudaStream_t stream);
void rmsnorm_bwd(kiln_dtype_t dtype, void* dx, float* dgamma, const void* dy, const void* x,
                 const void* gamma, const float* rstd, std::int64_t N, std::int64_t C,
                 void* workspace, cudaStream_t stream);

}  // namespace kiln::impl
