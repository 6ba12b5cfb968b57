// SwiGLU's internal launchers. Arguments are checked by the C ABI (swiglu.cpp) first.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kiln/core.h"

namespace kiln::impl {

// out: (N, I); gu: (N, 2I).
void swiglu_fwd(kiln_dtype_t dtype, void* out, const void* gu, std::int64_t N, std::int64_t I,
                cudaStream_t stream);
// dgu: (N, 2I), may be gu; dout: (N, I); gu: (N, 2I).
void swiglu_bwd(kiln_dtype_t dtype, void* dgu, const void* dout, const void* gu, std::int64_t N,
                std::int64_t I, cudaStream_t stream);

}  // namespace kiln::impl
