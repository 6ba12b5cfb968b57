// GELU's internal launchers. Arguments are checked by the C ABI (gelu.cpp) first.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kiln/core.h"

namespace kiln::impl {

void gelu_fwd(kiln_dtype_t dtype, void* y, const void* x, std::int64_t n, cudaStream_t stream);
void gelu_bwd(kiln_dtype_t dtype, void* dx, const void* dy, const void* x, std::int64_t n,
              cudaStream_t stream);

}  // namespace kiln::impl
