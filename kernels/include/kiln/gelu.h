/* kiln GELU, tanh approximation (GPT-2), elementwise over n elements, and its backward.
 *
 *   gelu(x)  = 0.5 x (1 + tanh(u)),   u = sqrt(2 / pi) (x + 0.044715 x^3)
 *   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2 / pi) (1 + 3 * 0.044715 x^2)
 *
 * Evaluated as x * sigmoid(2u), the same function without the cancellation of 1 + tanh(u) at
 * negative x. Types: all tensors share `dtype`: KILN_DTYPE_BF16 (storage, fp32 arithmetic,
 * outputs rounded to nearest even) or KILN_DTYPE_F32. Tensors 16-byte aligned; any n >= 0 (a
 * tail that is not a whole 16-byte vector is handled). Kernels are queued on `stream`; arguments
 * are checked before any launch. NaN propagates; gelu(+inf) = +inf; gelu(-inf) is NaN, as the
 * formula gives (-inf * 0). */
#ifndef KILN_GELU_H_
#define KILN_GELU_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = gelu(x).   y out (n) dtype, may be x (in place);   x in (n) dtype */
KILN_API kiln_status_t kiln_gelu_fwd(void* y, const void* x, int64_t n, kiln_dtype_t dtype,
                                     cudaStream_t stream);

/* dx = dy * gelu'(x) (overwrites dx).
 *   dx out (n) dtype, may be dy (in place);   dy in (n) dtype;   x in (n) dtype: the forward's
 *   input */
KILN_API kiln_status_t kiln_gelu_bwd(void* dx, const void* dy, const void* x, int64_t n,
                                     kiln_dtype_t dtype, cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

inline void gelu_fwd(void* y, const void* x, int64_t n, kiln_dtype_t dtype, cudaStream_t stream) {
  check(kiln_gelu_fwd(y, x, n, dtype, stream));
}
inline void gelu_bwd(void* dx, const void* dy, const void* x, int64_t n, kiln_dtype_t dtype,
                     cudaStream_t stream) {
  check(kiln_gelu_bwd(dx, dy, x, n, dtype, stream));
}

}  // namespace kiln
#endif /* __cplusplus */

#endif /* KILN_GELU_H_ */
