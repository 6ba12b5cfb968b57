/* kiln SwiGLU, the gated MLP activation of Llama-family models, forward and backward.
 *
 * gu (N, 2I) row-major is one GEMM's output: gate in columns [0, I), up in [I, 2I) (the fused
 * weight's rows: gate_proj then up_proj). With silu(g) = g * sigmoid(g) and
 * silu'(g) = sigmoid(g) * (1 + g * (1 - sigmoid(g))):
 *   fwd: out[n, j] = silu(gu[n, j]) * gu[n, I + j]
 *   bwd: dgu[n, j]     = dout[n, j] * gu[n, I + j] * silu'(gu[n, j])
 *        dgu[n, I + j] = dout[n, j] * silu(gu[n, j])
 *
 * Types. All tensors share `dtype`: KILN_DTYPE_BF16 (storage, fp32 arithmetic, outputs rounded to
 * nearest even) or KILN_DTYPE_F32. The sigmoid is 1 / (1 + expf(-g)) in fp32 with 1 - sigmoid
 * taken without cancellation: no overflow or NaN at large |g| (silu(-inf) is NaN, -inf * 0, as
 * the formula gives).
 *
 * Pointers and shapes. Tensors 16-byte aligned; N in [0, 2^31 - 1] (0: nothing is done), I in
 * [1, 2^31 - 1]. 16-byte vectors when I is a multiple of 8 (bf16) / 4 (fp32), a scalar path
 * otherwise.
 *
 * Execution. Asynchronous on `stream`; arguments checked before any launch; no allocation;
 * deterministic (elementwise). */
#ifndef KILN_SWIGLU_H_
#define KILN_SWIGLU_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out = silu(gate) * up.
 *   out  out  (N, I) dtype; may not overlap gu
 *   gu   in   (N, 2I) dtype: [gate | up] */
KILN_API kiln_status_t kiln_swiglu_fwd(void* out, const void* gu, int64_t N, int64_t I,
                                       kiln_dtype_t dtype, cudaStream_t stream);

/* Both gradients in one pass (overwrites dgu).
 *   dgu   out  (N, 2I) dtype: [dgate | dup]; may be gu exactly (in place: each element of gu is
 *              read before the same thread writes it), no other overlap with gu or dout
 *   dout  in   (N, I) dtype
 *   gu    in   (N, 2I) dtype: the forward's input */
KILN_API kiln_status_t kiln_swiglu_bwd(void* dgu, const void* dout, const void* gu, int64_t N,
                                       int64_t I, kiln_dtype_t dtype, cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

// The C entries above, throwing kiln::Error on failure.
inline void swiglu_fwd(void* out, const void* gu, int64_t N, int64_t I, kiln_dtype_t dtype,
                       cudaStream_t stream) {
  check(kiln_swiglu_fwd(out, gu, N, I, dtype, stream));
}
inline void swiglu_bwd(void* dgu, const void* dout, const void* gu, int64_t N, int64_t I,
                       kiln_dtype_t dtype, cudaStream_t stream) {
  check(kiln_swiglu_bwd(dgu, dout, gu, N, I, dtype, stream));
}

}  // namespace kiln
#endif /* __cplusplus */

#endif /* KILN_SWIGLU_H_ */
