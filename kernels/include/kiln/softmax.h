/* kiln softmax over the rows of a row-major (N, C) tensor, with a scale and an optional causal
 * mask, and its backward.
 *
 *   z[n,j] = scale * x[n,j], or -inf where masked;   y[n,j] = exp(z[n,j] - max_k z[n,k]) /
 *                                                            sum_k exp(z[n,k] - max_k z[n,k])
 *
 * Causal: rows are stacked C x C score blocks (rows of attention scores for queries 0 .. C-1 of
 * each (batch, head)), so row n sees columns 0 .. n % C and the rest are masked. Numerically
 * stable (the row maximum is subtracted first). A row whose visible entries are all -inf (fully
 * masked by the caller) gives zeros, never NaN; NaN or +inf in a visible entry makes the row NaN
 * (as PyTorch), and masked entries are 0 regardless.
 *
 * Types: x, y, dy, dx share `dtype`: KILN_DTYPE_BF16 (storage, fp32 arithmetic, outputs rounded
 * to nearest even) or KILN_DTYPE_F32. Tensors 16-byte aligned. N in [0, 2^31 - 1], C in
 * [1, 2^31 - 1]; rows with C a multiple of 8 (bf16) / 4 (fp32) up to 16384 (bf16) / 8192 (fp32)
 * are held in registers (one read and one write of memory per element), others take a scalar path.
 * Kernels are queued on `stream`; arguments are checked before any launch; outputs are bitwise
 * reproducible run to run. */
#ifndef KILN_SOFTMAX_H_
#define KILN_SOFTMAX_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = softmax(scale * x) per row.
 *   y       out  (N, C) dtype; may be x (in place)
 *   x       in   (N, C) dtype
 *   scale   finite, > 0 (attention: 1 / sqrt(head_dim))
 *   causal  0: no mask; 1: row n masks the columns j > n % C */
KILN_API kiln_status_t kiln_softmax_fwd(void* y, const void* x, int64_t N, int64_t C, double scale,
                                        int causal, kiln_dtype_t dtype, cudaStream_t stream);

/* The gradient with respect to the forward's x:
 *   dx[n,j] = scale * y[n,j] * (dy[n,j] - sum_k dy[n,k] * y[n,k])   (overwrites dx)
 * Masked entries have y = 0 and so get dx = 0; the mask needs no argument here.
 *   dx      out  (N, C) dtype; may be dy or y (in place)
 *   dy      in   (N, C) dtype
 *   y       in   (N, C) dtype: the forward's output
 *   scale   the forward's scale */
KILN_API kiln_status_t kiln_softmax_bwd(void* dx, const void* dy, const void* y, int64_t N,
                                        int64_t C, double scale, kiln_dtype_t dtype,
                                        cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

inline void softmax_fwd(void* y, const void* x, int64_t N, int64_t C, double scale, bool causal,
                        kiln_dtype_t dtype, cudaStream_t stream) {
  check(kiln_softmax_fwd(y, x, N, C, scale, causal ? 1 : 0, dtype, stream));
}
inline void softmax_bwd(void* dx, const void* dy, const void* y, int64_t N, int64_t C, double scale,
                        kiln_dtype_t dtype, cudaStream_t stream) {
  check(kiln_softmax_bwd(dx, dy, y, N, C, scale, dtype, stream));
}

}  // namespace kiln
#endif /* __cplusplus */

#endif /* KILN_SOFTMAX_H_ */
