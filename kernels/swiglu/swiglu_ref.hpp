// SwiGLU reference (the spec the CUDA kernels and the CPU backend follow), kiln/swiglu.h's
// formulas: gu (N, 2I) = [gate | up], out = silu(gate) * up, and both gradients in one pass.
//
// Arithmetic in Acc (double by default; float for the GPU tests' same-precision baseline).
#pragma once

#include <cstdint>

#include "kiln/export.h"

// Exported from the shared library (though not part of its public headers) so that the
// benchmarks, linked to it as a user would be, can spot-check results against the spec.
namespace kiln::ref {

// out: (N, I) out; gu: (N, 2I).
template <typename T, typename Acc = double>
KILN_API void swiglu_fwd_ref(T* out, const T* gu, std::int64_t N, std::int64_t I);

// dgu: (N, 2I) out (overwritten), may be gu (in place); dout: (N, I); gu: (N, 2I).
//   dgu[:, j] = dout * up * silu'(gate),  dgu[:, I + j] = dout * silu(gate)
template <typename T, typename Acc = double>
KILN_API void swiglu_bwd_ref(T* dgu, const T* dout, const T* gu, std::int64_t N, std::int64_t I);

}  // namespace kiln::ref
