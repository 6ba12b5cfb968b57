// LayerNorm reference (the spec the CUDA kernels and the CPU backend follow).
//
//   mean = sum_c x[c] / C,  var = sum_c (x[c] - mean)^2 / C  (biased, as PyTorch),
//   rstd = 1 / sqrt(var + eps),  y[c] = (x[c] - mean) * rstd * gamma[c] + beta[c]
//
// Arithmetic in Acc (double by default; the GPU tests instantiate Acc = float for the "plain
// same-precision" baseline of the tolerance rule). All arrays row-major and contiguous.
// Gradients of parameters (dgamma, dbeta) accumulate (+=), and so does dx: it lands in the
// residual stream's gradient, so the residual add of the backward is fused here.
#pragma once

#include <cstdint>

#include "kiln/export.h"

// Exported from the shared library (though not part of its public headers) so that the
// benchmarks, linked to it as a user would be, can spot-check results against the spec.
namespace kiln::ref {

// y: (N, C) out; mean, rstd: (N) out, each may be null; x: (N, C); gamma, beta: (C).
template <typename T, typename Acc = double>
KILN_API void layernorm_fwd_ref(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                                std::int64_t N, std::int64_t C, double eps);

// residual = a + b (stored as T), y = LayerNorm(residual as stored).
// residual, y: (N, C) out; mean, rstd: (N) out, may be null; a, b: (N, C); gamma, beta: (C).
// residual may be the same array as a or b (each element is read before it is written).
template <typename T, typename Acc = double>
KILN_API void residual_layernorm_fwd_ref(T* residual, T* y, T* mean, T* rstd, const T* a,
                                         const T* b, const T* gamma, const T* beta, std::int64_t N,
                                         std::int64_t C, double eps);

// With xhat = (x - mean) * rstd and g = dy * gamma:
//   dx     += rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))
//   dgamma += sum_n dy * xhat,  dbeta += sum_n dy
// dx: (N, C) in/out; dgamma, dbeta: (C) in/out; dy, x: (N, C); gamma: (C); mean, rstd: (N), as
// saved by the forward.
template <typename T, typename Acc = double>
KILN_API void layernorm_bwd_ref(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                                const T* mean, const T* rstd, std::int64_t N, std::int64_t C);

}  // namespace kiln::ref
