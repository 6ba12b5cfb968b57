// GELU, tanh approximation (GPT-2), reference (the spec the CUDA kernels and the CPU backend
// follow).
//
//   u = sqrt(2 / pi) * (x + 0.044715 x^3),  gelu(x) = 0.5 x (1 + tanh(u))
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2 / pi) (1 + 3 * 0.044715 x^2)
//
// Arithmetic in Acc (double by default; float for the GPU tests' same-precision baseline).
#pragma once

#include <cstdint>

#include "kiln/export.h"

// Exported from the shared library (though not part of its public headers) so that the
// benchmarks, linked to it as a user would be, can spot-check results against the spec.
namespace kiln::ref {

// y: (n) out; x: (n).
template <typename T, typename Acc = double>
KILN_API void gelu_fwd_ref(T* y, const T* x, std::int64_t n);

// dx = dy * gelu'(x), overwriting dx. dx: (n) out; dy, x: (n).
template <typename T, typename Acc = double>
KILN_API void gelu_bwd_ref(T* dx, const T* dy, const T* x, std::int64_t n);

}  // namespace kiln::ref
