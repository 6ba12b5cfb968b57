// Softmax's internal launchers. Arguments are checked by the C ABI (softmax.cpp) first.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kiln/core.h"

namespace kiln::impl {

void softmax_fwd(kiln_dtype_t dtype, void* y, const void* x, std::int64_t N, std::int64_t C,
                 float scale, bool causal, cudaStream_t stream);
void softmax_bwd(kiln_dtype_t dtype, void* dx, const void* dy, const void* y, std::int64_t N,
                 std::int64_t C, float scale, cudaStream_t stream);

}  // namespace kiln::impl
