// RMSNorm reference (the spec the CUDA kernels and the CPU backend follow).
//
//   rstd = 1 / sqrt(sum_c x[c]^2 / C + eps),  y[c] = x[c] * rstd * gamma[c]
//
// Arithmetic in Acc (double by default; Acc = float gives the GPU tests' same-precision
// baseline). Row-major contiguous arrays. dx and dgamma accumulate (+=), as in LayerNorm.
#pragma once

#include <cstdint>

#include "kiln/export.h"

// Exported from the shared library (though not part of its public headers) so that the
// benchmarks, linked to it as a user would be, can spot-check results against the spec.
namespace kiln::ref {

// y: (N, C) out; rstd: (N) out, may be null; x: (N, C); gamma: (C).
template <typename T, typename Acc = double>
KILN_API void rmsnorm_fwd_ref(T* y, T* rstd, const T* x, const T* gamma, std::int64_t N,
                              std::int64_t C, double eps);

// With xhat = x * rstd and g = dy * gamma:
//   dx += rstd * (g - xhat * mean_c(g * xhat)),  dgamma += sum_n dy * xhat
// dx: (N, C) in/out; dgamma: (C) in/out; dy, x: (N, C); gamma: (C); rstd: (N) from the forward.
template <typename T, typename Acc = double>
KILN_API void rmsnorm_bwd_ref(T* dx, T* dgamma, const T* dy, const T* x, const T* gamma,
                              const T* rstd, std::int64_t N, std::int64_t C);

}  // namespace kiln::ref
