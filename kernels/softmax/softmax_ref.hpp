// Row softmax reference (the spec the CUDA kernels and the CPU backend follow).
//
//   z[j] = scale * x[j], or -inf where masked;  m = max_j z[j];
//   y[j] = exp(z[j] - m) / sum_k exp(z[k] - m)
//
// Causal: rows are stacked C x C score blocks, so row r masks the columns j > r % C. A row with
// no finite-or-+inf entry left (every z is -inf: fully masked) gives zeros, never NaN; NaN and
// +inf inputs still propagate (a row holding one is NaN throughout). Arithmetic in Acc (double
// by default; float for the GPU tests' same-precision baseline). Outputs overwrite.
#pragma once

#include <cstdint>

#include "kiln/export.h"

// Exported from the shared library (though not part of its public headers) so that the
// benchmarks, linked to it as a user would be, can spot-check results against the spec.
namespace kiln::ref {

// y: (N, C) out; x: (N, C).
template <typename T, typename Acc = double>
KILN_API void softmax_fwd_ref(T* y, const T* x, std::int64_t N, std::int64_t C, double scale,
                              bool causal);

// dx[j] = scale * y[j] * (dy[j] - sum_k dy[k] * y[k]): the gradient with respect to the
// softmax's input x (masked entries have y = 0 and so get 0).
// dx: (N, C) out; dy, y: (N, C).
template <typename T, typename Acc = double>
KILN_API void softmax_bwd_ref(T* dx, const T* dy, const T* y, std::int64_t N, std::int64_t C,
                              double scale);

}  // namespace kiln::ref
